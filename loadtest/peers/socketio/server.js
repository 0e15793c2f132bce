// Socket.IO 4 behind the Redis adapter: a peer for Prism's benchmarks (loadtest/peers/socketio).
//
//     node server.js PORT REDIS_URL
//
// It does what a Socket.IO app would for Prism's scenarios: a "welcome" event carrying the socket id,
// "join" (a room, acknowledged), "bench.echo" (acknowledged with its data), and each socket in a
// "user:<id>" room from its handshake query. Nothing here publishes: messages come from the load
// generator through Redis in @socket.io/redis-emitter's format, so fan-out goes Redis -> adapter ->
// sockets, as it goes NATS -> gateway -> sockets for Prism.
"use strict";

const http = require("node:http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

async function main() {
  const [port, redisUrl] = [Number(process.argv[2]), process.argv[3]];
  const pubClient = createClient({ url: redisUrl });
  const subClient = pubClient.duplicate();
  // An adapter without a listener logs every Redis error as a warning; fail loudly instead.
  for (const client of [pubClient, subClient]) client.on("error", (err) => fail(err));
  await Promise.all([pubClient.connect(), subClient.connect()]);

  const httpServer = http.createServer();
  const io = new Server(httpServer, {
    adapter: createAdapter(pubClient, subClient),
    transports: ["websocket"], // clients open WebSockets directly: no long-polling handshake
    perMessageDeflate: false, // as for every target: compression would measure zlib, not the server
    httpCompression: false,
    serveClient: false,
  });

  io.on("connection", (socket) => {
    const user = socket.handshake.query.user;
    if (typeof user === "string" && user) socket.join(`user:${user}`);
    socket.emit("welcome", { conn: socket.id });
    socket.on("join", (room, ack) => {
      socket.join(String(room));
      if (typeof ack === "function") ack({ joined: room });
    });
    socket.on("bench.echo", (data, ack) => {
      if (typeof ack === "function") ack(data);
    });
  });

  httpServer.listen(port, "127.0.0.1", () => console.log(`socket.io listening on ${port}`));
}

function fail(err) {
  console.error(err);
  process.exit(1);
}

// SIGTERM (how the harness stops us) exits at once: there is nothing to drain in a benchmark.
process.on("SIGTERM", () => process.exit(0));
main().catch(fail);
