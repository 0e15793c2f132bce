// Prism console: a small page on the browser SDK (/prism.js). Plain ES module, no build step.
// Everything received is rendered with textContent, never as HTML.
import { PrismClient } from "/prism.js";

const LOG_LIMIT = 500;
const $ = (id) => document.getElementById(id);

const ui = {
  node: $("node"), user: $("user"), token: $("token"),
  connectForm: $("connect-form"), connect: $("connect"), disconnect: $("disconnect"),
  state: document.querySelector('[data-testid="state"]'),
  conn: document.querySelector('[data-testid="conn-id"]'),
  nodeId: document.querySelector('[data-testid="node-id"]'),
  userId: document.querySelector('[data-testid="user-id"]'),
  joinForm: $("join-form"), room: $("room"), join: $("join"), rooms: $("rooms"), roomsEmpty: $("rooms-empty"),
  sendForm: $("send-form"), event: $("event"), data: $("data"), dataError: $("data-error"),
  emit: $("emit"), request: $("request"), result: $("result"),
  notifyCard: $("notify-card"), notify: $("notify"), notifyResult: $("notify-result"),
  presenceRoom: $("presence-room"), members: $("members"), presenceEmpty: $("presence-empty"),
  log: $("log"), logCount: $("log-count"), clear: $("clear"),
};

let client = null;
let selectedRoom = null;
const presenceRooms = new Set(); // rooms that sent a presence snapshot (client.members(room) holds who)
const pendingSelf = new Set(); // ids of notifications this page asked for

// -- configuration -------------------------------------------------------------------------------
async function loadConfig() {
  try {
    const response = await fetch("/console/config.json", { cache: "no-store" });
    if (response.ok) return await response.json();
  } catch {
    // served without the console config: use this page's own node
  }
  return { nodes: [], notify: false };
}

function ownNode() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

function fillNodes(nodes) {
  const urls = Array.isArray(nodes) && nodes.length ? nodes.map(String) : [ownNode()];
  urls.forEach((url, i) => {
    let where = url;
    try {
      where = new URL(url).host;
    } catch {
      // not a URL: show it as it is
    }
    const option = new Option(`node${i + 1} · ${where}`, String(i));
    option.title = url;
    option.dataset.url = url;
    ui.node.append(option);
  });
  if (urls.length > 1) {
    const all = new Option("any node (fail over between all)", "all");
    all.dataset.url = "";
    ui.node.append(all);
  }
  return urls;
}

// -- small helpers ---------------------------------------------------------------------------------
function errorText(error) {
  if (error && typeof error === "object") {
    if (error.code && error.message) return `${error.code}: ${error.message}`;
    if (error.message) return String(error.message);
  }
  return String(error);
}

function pretty(value) {
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

function stamp() {
  const now = new Date();
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(now.getHours())}:${pad(now.getMinutes())}:${pad(now.getSeconds())}.${pad(now.getMilliseconds(), 3)}`;
}

function bytesOf(data) {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return null;
}

function hexPreview(bytes, limit = 64) {
  const shown = Array.from(bytes.subarray(0, limit), (b) => b.toString(16).padStart(2, "0")).join(" ");
  return bytes.length > limit ? `${shown} …` : shown;
}

function showResult(output, outcome, text) {
  output.hidden = false;
  output.dataset.outcome = outcome;
  output.textContent = text;
}

// -- the log -----------------------------------------------------------------------------------------
function log(kind, summary, body, note) {
  const item = document.createElement("li");
  item.dataset.kind = kind;
  item.setAttribute("data-testid", "log-entry");
  const time = document.createElement("time");
  time.textContent = stamp();
  time.dateTime = new Date().toISOString();
  const label = document.createElement("span");
  label.className = "kind";
  label.textContent = kind;
  const text = document.createElement("span");
  text.className = "summary";
  text.textContent = summary;
  if (note) {
    const small = document.createElement("small");
    small.textContent = note;
    text.append(small);
  }
  item.append(time, label, text);
  if (body !== undefined && body !== null && body !== "") {
    const pre = document.createElement("pre");
    pre.textContent = body;
    item.append(pre);
  }
  ui.log.prepend(item);
  while (ui.log.childElementCount > LOG_LIMIT) ui.log.lastElementChild.remove();
  ui.logCount.textContent = String(ui.log.childElementCount);
}

function logDelivery(message) {
  const bytes = bytesOf(message);
  if (bytes) {
    log("delivery", `binary, ${bytes.length} bytes`, hexPreview(bytes), "binary");
    return;
  }
  const text = String(message);
  let parsed;
  const first = text.trimStart()[0];
  if (first === "{" || first === "[") {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
  }
  if (parsed && parsed.type === "notification" && typeof parsed.id === "string") {
    const mine = pendingSelf.delete(parsed.id);
    log("notification", parsed.id, pretty(parsed), mine ? "text · you asked for this" : "text");
    return;
  }
  if (parsed !== undefined) {
    log("delivery", `JSON, ${text.length} characters`, pretty(parsed), "text");
  } else {
    log("delivery", `${text.length} characters`, text, "text");
  }
}

// -- identity, rooms and presence -------------------------------------------------------------------
function setState(state) {
  ui.state.textContent = state;
  ui.state.dataset.state = state;
  const live = state === "connected";
  const open = client !== null && state !== "closed";
  for (const button of [ui.join, ui.emit, ui.request, ui.notify]) button.disabled = !live;
  ui.connect.disabled = open;
  ui.disconnect.disabled = !open;
  for (const field of [ui.node, ui.user, ui.token]) field.disabled = open;
}

function showIdentity(welcome) {
  ui.conn.textContent = welcome ? welcome.conn : "–";
  ui.nodeId.textContent = welcome ? welcome.node : "–";
  ui.userId.textContent = welcome ? (welcome.user ?? "anonymous") : "–";
}

function renderRooms() {
  ui.rooms.replaceChildren();
  const rooms = client ? [...client.rooms] : [];
  rooms.sort();
  if (selectedRoom && !rooms.includes(selectedRoom)) selectedRoom = null;
  if (!selectedRoom && rooms.length) selectedRoom = rooms[0];
  for (const room of rooms) {
    const item = document.createElement("li");
    item.setAttribute("data-testid", "room");
    item.dataset.room = room;
    item.setAttribute("aria-current", String(room === selectedRoom));
    const name = document.createElement("button");
    name.type = "button";
    name.className = "room-name";
    name.textContent = room;
    name.title = `Show who is in ${room}`;
    name.addEventListener("click", () => {
      selectedRoom = room;
      renderRooms();
    });
    const leave = document.createElement("button");
    leave.type = "button";
    leave.className = "small";
    leave.textContent = "Leave";
    leave.setAttribute("data-testid", "leave");
    leave.setAttribute("aria-label", `Leave ${room}`);
    leave.addEventListener("click", () => leaveRoom(room));
    item.append(name, leave);
    ui.rooms.append(item);
  }
  ui.roomsEmpty.hidden = rooms.length > 0;
  renderPresence();
}

function renderPresence() {
  ui.members.replaceChildren();
  ui.presenceRoom.textContent = selectedRoom ? `in ${selectedRoom}` : "";
  const members = client && selectedRoom && presenceRooms.has(selectedRoom) ? client.members(selectedRoom) : null;
  if (!selectedRoom) {
    ui.presenceEmpty.textContent = "Join a room to see who is in it.";
  } else if (!members) {
    ui.presenceEmpty.textContent = "No presence events for this room yet (rooms in PRISM_ROOM_PRESENCE send them).";
  } else if (!members.length) {
    ui.presenceEmpty.textContent = "Nobody with a user name is here.";
  }
  ui.presenceEmpty.hidden = Boolean(members && members.length);
  if (!members) return;
  const me = client ? client.user : null;
  for (const user of members) {
    const item = document.createElement("li");
    item.setAttribute("data-testid", "member");
    item.dataset.user = user;
    item.dataset.me = String(user === me);
    item.textContent = user === me ? `${user} (you)` : user;
    ui.members.append(item);
  }
}

function onPresence(p) {
  if (!p || typeof p.room !== "string") return;
  presenceRooms.add(p.room);
  if (Array.isArray(p.members)) {
    log("presence", `${p.room}: ${p.members.length} present`, p.members.join(", "));
  } else {
    const parts = [];
    if (p.joined?.length) parts.push(`joined ${p.joined.join(", ")}`);
    if (p.left?.length) parts.push(`left ${p.left.join(", ")}`);
    log("presence", `${p.room}: ${parts.join("; ")}`);
  }
  if (p.room === selectedRoom || !selectedRoom) renderRooms();
}

// -- actions ------------------------------------------------------------------------------------------
function chosenUrls(urls) {
  const choice = ui.node.value;
  if (choice === "all") return urls;
  return [urls[Number(choice)] ?? urls[0]];
}

async function connect(urls) {
  const options = { reconnect: true };
  const user = ui.user.value.trim();
  const token = ui.token.value.trim();
  if (user) options.user = user;
  if (token) options.token = token;
  const target = chosenUrls(urls);
  client = new PrismClient(target.length === 1 ? target[0] : target, options);
  const current = client;
  const alive = () => client === current;
  current.on("state", (state) => {
    if (!alive()) return;
    setState(state);
    if (state === "reconnecting") {
      log("state", "reconnecting …");
      presenceRooms.clear();
      renderRooms();
    }
  });
  current.on("welcome", (w) => {
    if (!alive()) return;
    showIdentity(w);
    presenceRooms.clear(); // snapshots come again after the rejoins
    log("welcome", `${w.conn} on ${w.node}`, pretty(w));
    renderRooms();
  });
  current.on("message", (m) => alive() && logDelivery(m));
  current.on("presence", (p) => alive() && onPresence(p));
  current.on("error", (e) => {
    if (!alive()) return;
    log("error", errorText(e), e && typeof e === "object" ? pretty(e) : undefined);
    if (e && e.room) renderRooms(); // a room that could not be joined again after a reconnect
  });
  current.on("close", ({ code, reason, willReconnect }) => {
    if (!alive()) return;
    log("close", `code ${code}${reason ? ` · ${reason}` : ""}`, undefined, willReconnect ? "reconnecting" : "closed for good");
    if (!willReconnect) {
      showIdentity(null);
      presenceRooms.clear();
      renderRooms();
    }
  });
  setState("connecting");
  log("state", `connecting to ${target.join(", ")}`, undefined, user ? `as ${user}` : "anonymous");
  try {
    await current.connect();
  } catch (error) {
    if (!alive()) return;
    log("error", `could not connect: ${errorText(error)}`);
    current.close();
    client = null;
    setState("closed");
    showIdentity(null);
  }
}

function disconnect() {
  if (!client) return;
  const closing = client;
  client = null;
  closing.close();
  presenceRooms.clear();
  selectedRoom = null;
  showIdentity(null);
  setState("closed");
  renderRooms();
  log("state", "disconnected");
}

async function joinRoom(room) {
  if (!client || !room) return;
  try {
    await client.join(room);
    selectedRoom = room;
    log("ok", `joined ${room}`);
  } catch (error) {
    log("error", `join ${room}: ${errorText(error)}`);
  }
  renderRooms();
}

async function leaveRoom(room) {
  if (!client) return;
  try {
    await client.leave(room);
    presenceRooms.delete(room);
    log("ok", `left ${room}`);
  } catch (error) {
    log("error", `leave ${room}: ${errorText(error)}`);
  }
  renderRooms();
}

function readData() {
  const raw = ui.data.value.trim();
  if (!raw) return { ok: true, value: null };
  try {
    const value = JSON.parse(raw);
    ui.data.removeAttribute("aria-invalid");
    ui.dataError.hidden = true;
    return { ok: true, value };
  } catch (error) {
    ui.data.setAttribute("aria-invalid", "true");
    ui.dataError.hidden = false;
    ui.dataError.textContent = `Data is not valid JSON: ${error.message}`;
    return { ok: false };
  }
}

async function send(asRequest) {
  if (!client) return;
  const event = ui.event.value.trim();
  const data = readData();
  if (!event || !data.ok) return;
  if (!asRequest) {
    try {
      const now = client.emit(event, data.value);
      log("sent", `event ${event}`, pretty(data.value), now ? "" : "queued until connected");
      showResult(ui.result, "ok", now ? `sent ${event} (no reply expected)` : `queued ${event} until connected`);
    } catch (error) {
      log("error", `event ${event}: ${errorText(error)}`);
      showResult(ui.result, "error", errorText(error));
    }
    return;
  }
  ui.request.disabled = true;
  showResult(ui.result, "pending", `waiting for a reply to ${event} …`);
  try {
    const reply = await client.request(event, data.value);
    log("reply", `reply to ${event}`, pretty(reply));
    showResult(ui.result, "ok", pretty(reply));
  } catch (error) {
    log("error", `request ${event}: ${errorText(error)}`);
    showResult(ui.result, "error", errorText(error));
  } finally {
    ui.request.disabled = !client || client.state !== "connected";
  }
}

async function notifyMe() {
  if (!client) return;
  ui.notify.disabled = true;
  const payload = { title: "Hello from the Prism console", at: new Date().toISOString() };
  try {
    const reply = await client.request("notify.self", { payload });
    if (reply && typeof reply.id === "string") {
      pendingSelf.add(reply.id);
      showResult(ui.notifyResult, "ok", `stored as ${reply.id}; it arrives in the log`);
      log("reply", "notify.self", pretty(reply));
    } else {
      const text = reply && reply.message ? `${reply.error}: ${reply.message}` : pretty(reply);
      showResult(ui.notifyResult, "error", text);
      log("error", `notify.self: ${text}`);
    }
  } catch (error) {
    showResult(ui.notifyResult, "error", errorText(error));
    log("error", `notify.self: ${errorText(error)}`);
  } finally {
    ui.notify.disabled = !client || client.state !== "connected";
  }
}

// -- start ----------------------------------------------------------------------------------------------
async function main() {
  const config = await loadConfig();
  const urls = fillNodes(config.nodes);
  const params = new URLSearchParams(location.search);
  if (params.has("user")) ui.user.value = params.get("user");
  if (params.has("node")) {
    const wanted = params.get("node");
    const index = urls.findIndex((url, i) => wanted === String(i + 1) || wanted === `node${i + 1}` || wanted === url);
    if (index >= 0) ui.node.value = String(index);
    if (wanted === "all" && urls.length > 1) ui.node.value = "all";
  }
  ui.notifyCard.hidden = !config.notify;

  ui.connectForm.addEventListener("submit", (e) => {
    e.preventDefault();
    if (!client) connect(urls);
  });
  ui.disconnect.addEventListener("click", disconnect);
  ui.joinForm.addEventListener("submit", (e) => {
    e.preventDefault();
    joinRoom(ui.room.value.trim());
  });
  ui.sendForm.addEventListener("submit", (e) => {
    e.preventDefault();
    send(false);
  });
  ui.request.addEventListener("click", () => send(true));
  ui.data.addEventListener("input", () => {
    if (ui.data.getAttribute("aria-invalid")) readData();
  });
  ui.notify.addEventListener("click", notifyMe);
  ui.clear.addEventListener("click", () => {
    ui.log.replaceChildren();
    ui.logCount.textContent = "0";
  });
  setState("closed");
  renderRooms();
  document.documentElement.dataset.ready = "true";
}

main();
