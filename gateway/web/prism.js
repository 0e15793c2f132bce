// Prism browser client: a dependency-free ES module served by every gateway at /prism.js.
//
//   import { PrismClient } from "/prism.js";
//   const client = new PrismClient("wss://rt.example.com/ws", { token: () => fetchToken() });
//   client.on("message", (m) => console.log(m));
//   await client.connect();
//   await client.join("lobby");
//   const answer = await client.request("echo", { hi: 1 });
//
// It mirrors the Python client (shared/client/): the same close-code policy
// (shared/close_codes.should_reconnect, docs/protocol.md section 11), exponential backoff with full
// jitter, rooms rejoined after a reconnect before "connected" is reported, requests in flight failed
// (never resent) when a connection drops, and missed-message recovery: positions kept per recoverable
// room and user stream and sent with every rejoin and reconnect (docs/protocol.md, "Recovery"; the same
// rules as shared/positions.py). docs/browser.md documents the API; prism.d.ts declares it.

/** Every close code Prism sends (shared/close_codes.py). */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001,
  PROTOCOL_ERROR: 1002,
  ABNORMAL: 1006, // never sent on the wire: the browser reports it when the TCP connection just ended
  INVALID_DATA: 1007,
  POLICY_VIOLATION: 1008,
  MESSAGE_TOO_BIG: 1009,
  INTERNAL_ERROR: 1011,
  SERVICE_RESTART: 1012,
  TRY_AGAIN_LATER: 1013,
  SLOW_CONSUMER: 4001,
  BACKEND_RECONNECT: 4002,
  CLOSED_BY_BACKEND: 4500,
  UNAUTHORIZED: 4501,
  FORBIDDEN: 4503,
});

// The "reconnect: yes" rows of the table in docs/protocol.md section 11.
const RECONNECT_CODES = new Set([1001, 1011, 1012, 1013, 4001, 4002]);

/**
 * Whether a client should reconnect after a close with this code: the codes above, 1006 (no close frame),
 * a missing code, and any unknown code in 4000-4499. Everything else (1000 from the node, 1002, 1007,
 * 1008, 1009, 4500-4999, other codes) is final. Same table as shared.close_codes.should_reconnect.
 */
export function shouldReconnect(code) {
  if (code === null || code === undefined || code === 1006) return true;
  if (RECONNECT_CODES.has(code)) return true;
  const known = Object.values(CloseCode).includes(code);
  return !known && code >= 4000 && code < 4500;
}

const DEFAULT_BACKOFF = Object.freeze({ base: 0.25, cap: 30, factor: 2 });

/**
 * The delay in seconds before reconnect attempt `attempt` (0-based: failures so far): uniform in
 * [0, min(cap, base * factor ** attempt)], "full jitter" like shared/backoff.py. Full jitter spreads
 * the clients of a node that died over the whole window instead of bringing them back at once.
 */
export function backoffDelay(attempt, policy = DEFAULT_BACKOFF, random = Math.random) {
  const { base, cap, factor } = { ...DEFAULT_BACKOFF, ...policy };
  const ceiling = Math.min(cap, base * factor ** Math.min(attempt, 64));
  return random() * ceiling;
}

/** A refused command or request, a timeout, or a lost connection. `code` is the error frame's slug
 * (invalid_room, forbidden, no_responders, timeout, ...) or one of the SDK's own: connection_lost,
 * closed, connect_failed, queue_full, token_error. */
export class PrismError extends Error {
  constructor(code, message, details = {}) {
    super(message);
    this.name = "PrismError";
    this.code = code;
    Object.assign(this, details);
  }
}

const PRISM_PREFIX = '{"prism":';
const SUBPROTOCOL = "prism";
const BEARER_PREFIX = "prism.bearer.";
const MAX_QUEUED = 1000; // emit/send frames held while reconnecting; more is a sign of a dead link

function toWebSocketUrl(url) {
  // Relative and http(s) URLs are resolved against the page, so "/ws" means this origin's /ws.
  const base = globalThis.location ? globalThis.location.href : undefined;
  const parsed = new URL(url, base);
  if (parsed.protocol === "http:") parsed.protocol = "ws:";
  else if (parsed.protocol === "https:") parsed.protocol = "wss:";
  if (parsed.protocol !== "ws:" && parsed.protocol !== "wss:") {
    throw new TypeError(`not a WebSocket URL: ${url}`);
  }
  return parsed;
}

function decodeBase64(text) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i += 1) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

function isPosition(value) {
  return (
    value !== null &&
    typeof value === "object" &&
    typeof value.epoch === "string" &&
    Number.isSafeInteger(value.seq) &&
    value.seq >= 0
  );
}

function reconnectPolicy(option) {
  if (option === false) return null;
  if (option === undefined || option === true) return { ...DEFAULT_BACKOFF, maxAttempts: Infinity };
  const policy = { ...DEFAULT_BACKOFF, maxAttempts: Infinity, ...option };
  if (!(policy.base > 0) || !(policy.cap >= policy.base) || !(policy.factor >= 1)) {
    throw new RangeError("reconnect needs base > 0, cap >= base and factor >= 1");
  }
  if (!(policy.maxAttempts >= 1)) throw new RangeError("reconnect.maxAttempts must be at least 1");
  return policy;
}

function expectedOf(frame) {
  // [key, name, seq] of a pos or mark frame, or null if malformed.
  const key = "room" in frame ? "room" : "user";
  const name = frame[key];
  if (!Number.isSafeInteger(frame.seq) || (key === "room" && typeof name !== "string")) return null;
  return [key, name ?? "", frame.seq];
}

/**
 * One logical connection to Prism that survives reconnects. See docs/browser.md.
 *
 * States: "idle" (constructed, connect() not called yet) -> "connecting" -> "connected" <->
 * "reconnecting" -> "closed" (final).
 */
export class PrismClient {
  constructor(urls, options = {}) {
    const list = Array.isArray(urls) ? urls : [urls];
    if (list.length === 0) throw new TypeError("PrismClient needs at least one URL");
    this._urls = list.map((u) => toWebSocketUrl(u));
    if (options.user !== undefined && options.user !== null) {
      for (const url of this._urls) url.searchParams.set("user", String(options.user));
    }
    this._token = options.token;
    this._policy = reconnectPolicy(options.reconnect);
    this._requestTimeout = options.requestTimeout ?? 10000;
    this._openTimeout = options.openTimeout ?? 10000;
    // A browser cannot see the HTTP status of a refused upgrade (401, 403, 400): a bad token looks like
    // a node that is down. Before the first welcome, give up after this many failed attempts in a row.
    this._connectAttempts = options.connectAttempts ?? 5;
    this._next = options.randomize === false ? 0 : Math.floor(Math.random() * this._urls.length);
    this._listeners = new Map();
    this._rooms = new Map(); // joined (ok received) -> with recovery; rejoined after every reconnect
    // Recovery (docs/protocol.md, "Recovery"): positions per room and for the user stream.
    const { recover } = options;
    if (recover !== undefined && typeof recover !== "boolean" && !isPosition(recover)) {
      throw new TypeError("recover must be true, false or a position {epoch, seq}");
    }
    this._recoverUser = recover !== undefined && recover !== false;
    this._userPosition = isPosition(recover) ? { epoch: recover.epoch, seq: recover.seq } : null;
    this._roomPositions = new Map(); // room -> {epoch, seq}
    this._expect = null; // the position of the delivery that comes next (after a pos frame)
    this._members = new Map(); // room -> Set of users, from presence frames
    this._pending = new Map(); // ref -> {resolve, reject, kind, room, timer}
    this._queue = []; // frames sent while not connected, written once connected
    this._waiters = new Set(); // callbacks run when the state changes (join/request wait for "connected")
    this._refs = 0;
    this._link = null; // the current connection: {ws, url, welcomed, onMessage, onClose}
    this._dialing = false; // awaiting the token function before opening a socket
    this._timer = null; // the backoff wait, or the wait for a welcome
    this._failures = 0; // failed attempts since the last successful connection
    this._everConnected = false;
    this._firstConnect = null; // {resolve, reject} of connect()
    this._closing = false; // close() was called
    this.state = "idle";
    this.conn = null;
    this.node = null;
    this.user = null;
    this.route = null;
    this.welcome = null;
    this.reconnects = 0;
    this._online = () => this._retryNow();
  }

  /** The rooms this client is in (a copy): rejoined after every reconnect. */
  get rooms() {
    return new Set(this._rooms.keys());
  }

  /** The client's position in `room`, or in its user stream (no argument); null before the node sent
   * one. A copy: keep it (say in localStorage) to resume a later client with join's `position` or the
   * `recover` option. */
  position(room) {
    const found = room === undefined ? this._userPosition : this._roomPositions.get(room);
    return found ? { ...found } : null;
  }

  /** Every position this client holds: {rooms: {room: {epoch, seq}}, user: {epoch, seq} | null}. */
  positions() {
    const rooms = {};
    for (const [room, position] of this._roomPositions) rooms[room] = { ...position };
    return { rooms, user: this._userPosition ? { ...this._userPosition } : null };
  }

  /** The users present in `room` (a presence-enabled room this client joined), sorted. */
  members(room) {
    return [...(this._members.get(room) ?? [])].sort();
  }

  on(type, listener) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(listener);
    return () => this.off(type, listener);
  }

  off(type, listener) {
    this._listeners.get(type)?.delete(listener);
  }

  /** Open the connection. Resolves with the first welcome; rejects (PrismError) if the first
   * connection fails for good: a final close code, `connectAttempts` failures, or close(). */
  connect() {
    if (this._closing || this.state === "closed") {
      return Promise.reject(new PrismError("closed", "this client was closed; create a new one"));
    }
    if (this._firstConnect !== null) return this._firstConnect.promise;
    let resolve;
    let reject;
    const promise = new Promise((ok, fail) => {
      resolve = ok;
      reject = fail;
    });
    this._firstConnect = { promise, resolve, reject };
    if (this.state === "idle") {
      globalThis.addEventListener?.("online", this._online);
      this._setState("connecting");
      this._attempt();
    }
    return promise;
  }

  /** Join `room`; resolves once the node answered ok (deliveries to the room reach this client from
   * then on). Waits for a connection while reconnecting, within `timeout` ms. `recover: true`: the
   * room's deliveries come with positions (if it has history) and every rejoin resumes from the latest;
   * `position` (implies recover): resume from a position kept earlier. With recovery, it resolves once
   * what was missed has arrived. */
  async join(room, { timeout, recover = false, position } = {}) {
    if (position !== undefined) {
      if (!isPosition(position)) throw new TypeError("position must be {epoch, seq}");
      this._roomPositions.set(room, { epoch: position.epoch, seq: position.seq });
    }
    const withRecovery = recover || position !== undefined;
    await this._command(this._joinFrame(room, withRecovery), "join", room, timeout, withRecovery);
  }

  async leave(room, { timeout } = {}) {
    await this._command({ prism: "leave", room }, "leave", room, timeout);
  }

  /** Replace the token of this connection ({"prism":"refresh"}); it is also used for reconnects unless
   * the token option is a function. */
  async refresh(token, { timeout } = {}) {
    await this._command({ prism: "refresh", token }, "refresh", null, timeout);
    if (typeof this._token !== "function") this._token = token;
  }

  /** Fire-and-forget event for the backends (subject client.event.<event>). Returns true if written
   * now, false if queued until the client is connected again. */
  emit(event, data = null) {
    return this._write(JSON.stringify({ event, data }));
  }

  /** A request to the backends; resolves with the reply's data (a Uint8Array for binary replies). */
  async request(event, data = null, { timeout } = {}) {
    const answer = await this._command({ event, data }, "request", null, timeout);
    if (answer.encoding === "base64" && typeof answer.data === "string") return decodeBase64(answer.data);
    return answer.data ?? null;
  }

  /** A raw message (published on client.message): a string is a text frame, an ArrayBuffer, a typed
   * array or a DataView a binary frame. Returns like emit(). */
  send(message) {
    if (typeof message === "string" || message instanceof ArrayBuffer || ArrayBuffer.isView(message)) {
      return this._write(message);
    }
    throw new TypeError("send() takes a string, an ArrayBuffer or a typed array");
  }

  /** Close for good: no reconnect. Pending commands and requests fail with code "closed". */
  close(code = 1000, reason = "") {
    if (code !== 1000 && !(code >= 3000 && code <= 4999)) {
      throw new RangeError(`a browser may close with 1000 or 3000-4999, not ${code}`);
    }
    if (this.state === "closed" || this._closing) return;
    this._closing = true;
    clearTimeout(this._timer);
    const link = this._link;
    this._link = null;
    if (link !== null) {
      this._detach(link);
      link.ws.close(code, reason);
    }
    this._emitEvent("close", { code, reason, willReconnect: false });
    this._finish(new PrismError("closed", "the client was closed"));
  }

  // -- internals --------------------------------------------------------------------------------------

  _emitEvent(type, value) {
    for (const listener of [...(this._listeners.get(type) ?? [])]) {
      try {
        listener(value);
      } catch (error) {
        // A listener's bug must not break the connection; surface it like an uncaught error.
        setTimeout(() => {
          throw error;
        }, 0);
      }
    }
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emitEvent("state", state);
    for (const wake of [...this._waiters]) wake();
  }

  _ready(timeout) {
    // Resolves once connected; rejects if closed for good or after `timeout` ms.
    if (this.state === "connected") return Promise.resolve();
    if (this.state === "closed") return Promise.reject(new PrismError("closed", "the client is closed"));
    if (this.state === "idle") {
      return Promise.reject(new PrismError("not_connected", "call connect() first"));
    }
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        this._waiters.delete(wake);
      };
      const wake = () => {
        if (this.state === "connected") {
          done();
          resolve();
        } else if (this.state === "closed") {
          done();
          reject(new PrismError("closed", "the client is closed"));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new PrismError("timeout", `not connected within ${timeout} ms`));
      }, timeout);
      this._waiters.add(wake);
    });
  }

  async _command(frame, kind, room, timeout = this._requestTimeout, recover = false) {
    const started = Date.now();
    await this._ready(timeout);
    return this._send(frame, kind, room, Math.max(0, timeout - (Date.now() - started)), undefined, recover);
  }

  _joinFrame(room, recover) {
    if (!recover) return { prism: "join", room };
    const position = this._roomPositions.get(room);
    const frame = { prism: "join", room, recover: true };
    return position ? { ...frame, epoch: position.epoch, seq: position.seq } : frame;
  }

  _send(frame, kind, room, timeout, ws = this._link.ws, recover = false) {
    return new Promise((resolve, reject) => {
      this._refs += 1;
      const ref = this._refs;
      const timer = setTimeout(() => {
        this._pending.delete(ref);
        const what = kind === "request" ? `reply to '${frame.event}'` : `answer to ${kind}`;
        reject(new PrismError("timeout", `no ${what} within ${timeout} ms`));
      }, timeout);
      this._pending.set(ref, { resolve, reject, kind, room, timer, recover });
      ws.send(JSON.stringify({ ...frame, ref }));
    });
  }

  _write(message) {
    if (this.state === "closed") throw new PrismError("closed", "the client is closed");
    if (this.state === "connected" && this._link !== null) {
      this._link.ws.send(message);
      return true;
    }
    if (this._queue.length >= MAX_QUEUED) {
      throw new PrismError("queue_full", `${MAX_QUEUED} messages already wait for a connection`);
    }
    // Copy typed arrays: the caller may reuse its buffer before the connection is back.
    this._queue.push(ArrayBuffer.isView(message) ? message.slice() : message);
    return false;
  }

  _failPending(error) {
    for (const [ref, pending] of this._pending) {
      clearTimeout(pending.timer);
      // A leave in flight: the next connection is not in the room either.
      if (pending.kind === "leave" && pending.room !== null) {
        this._rooms.delete(pending.room);
        this._roomPositions.delete(pending.room);
      }
      pending.reject(error);
      this._pending.delete(ref);
    }
  }

  async _attempt() {
    this._timer = null;
    this._dialing = true; // until the socket exists: a second attempt must not start meanwhile
    const url = new URL(this._urls[this._next]);
    if (this._recoverUser) {
      // The user stream with positions, resuming where the last connection got to.
      url.searchParams.set("recover", "user");
      if (this._userPosition) {
        url.searchParams.set("user_epoch", this._userPosition.epoch);
        url.searchParams.set("user_seq", String(this._userPosition.seq));
      }
    }
    const protocols = [SUBPROTOCOL];
    try {
      const token = typeof this._token === "function" ? await this._token() : this._token;
      if (token) protocols.push(BEARER_PREFIX + token);
    } catch (error) {
      this._dialing = false;
      if (this._closing) return;
      this._emitEvent("error", { code: "token_error", message: `token: ${error}`, ref: null });
      this._failed(null, "token_error", true, true); // the token service may be down: back off
      return;
    }
    this._dialing = false;
    if (this._closing) return;
    let ws;
    try {
      ws = new WebSocket(url.href, protocols);
    } catch (error) {
      // A malformed URL or token (e.g. characters a subprotocol may not hold): retrying cannot help.
      this._emitEvent("error", { code: "connect_failed", message: String(error), ref: null });
      this._failed(null, String(error), false, true);
      return;
    }
    ws.binaryType = "arraybuffer";
    const link = { ws, url: url.href, welcomed: false, onMessage: null, onClose: null };
    this._expect = null;
    link.onMessage = (event) => this._onMessage(link, event);
    link.onClose = (event) => this._onClose(link, event.code, event.reason);
    ws.addEventListener("message", link.onMessage);
    ws.addEventListener("close", link.onClose);
    this._link = link;
    // No welcome in time: a failed attempt (a proxy that accepts the upgrade but never answers).
    this._timer = setTimeout(() => {
      if (this._link === link && !link.welcomed) this._drop(link, 1006, "no welcome frame in time");
    }, this._openTimeout);
  }

  _detach(link) {
    link.ws.removeEventListener("message", link.onMessage);
    link.ws.removeEventListener("close", link.onClose);
  }

  _drop(link, code, reason) {
    // Give up on a connection from this side, then handle it as if the node had closed it.
    this._detach(link);
    link.ws.close(1000, reason.slice(0, 100));
    this._onClose(link, code, reason);
  }

  _onMessage(link, event) {
    if (this._link !== link) return;
    const { data } = event;
    if (typeof data !== "string" || !data.startsWith(PRISM_PREFIX)) {
      const expected = this._expect;
      this._expect = null;
      if (expected !== null && !this._accept(expected)) return; // already received before a reconnect
      this._emitEvent("message", data);
      return;
    }
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return; // never sent by a node; a backend must not send payloads that start this way
    }
    if (frame === null || typeof frame !== "object") return;
    switch (frame.prism) {
      case "welcome":
        this._onWelcome(link, frame);
        return;
      case "ok":
      case "reply":
      case "error":
        this._onAnswer(frame);
        return;
      case "presence":
        this._onPresence(frame);
        return;
      case "pos":
        this._expect = expectedOf(frame);
        return;
      case "mark":
        this._onMark(frame);
        return;
      case "recovery":
        this._onRecovery(frame);
        return;
      default:
        return; // newer kinds of gateway frames: ignored, as additions must be
    }
  }

  _onAnswer(frame) {
    const pending = frame.ref === null || frame.ref === undefined ? undefined : this._pending.get(frame.ref);
    if (pending === undefined) {
      if (frame.prism === "error") {
        const { code, message, ref = null } = frame;
        this._emitEvent("error", { code, message, ref });
      }
      return;
    }
    this._pending.delete(frame.ref);
    clearTimeout(pending.timer);
    if (frame.prism === "error") {
      pending.reject(new PrismError(frame.code, frame.message, pending.room ? { room: pending.room } : {}));
      return;
    }
    if (pending.kind === "join" || pending.kind === "rejoin") this._rooms.set(pending.room, pending.recover);
    if (pending.kind === "leave") {
      this._rooms.delete(pending.room);
      this._members.delete(pending.room);
      this._roomPositions.delete(pending.room);
    }
    pending.resolve(frame);
  }

  _positionOf(key, name) {
    return key === "room" ? this._roomPositions.get(name) : this._userPosition;
  }

  _setPosition(key, name, position) {
    if (key === "room") this._roomPositions.set(name, position);
    else this._userPosition = position;
  }

  _accept([key, name, seq]) {
    // The delivery after a pos frame: new (the position moves to it) or a duplicate (dropped).
    const current = this._positionOf(key, name);
    if (!current) return true;
    if (seq <= current.seq) return false;
    this._setPosition(key, name, { epoch: current.epoch, seq });
    return true;
  }

  _onMark(frame) {
    const expected = expectedOf(frame);
    if (expected === null) return;
    const [key, name, seq] = expected;
    const current = this._positionOf(key, name);
    if (current && seq > current.seq) this._setPosition(key, name, { epoch: current.epoch, seq });
  }

  _onRecovery(frame) {
    const key = "room" in frame ? "room" : "user";
    const name = frame[key];
    if (key === "room" && typeof name !== "string") return;
    const event = { [key]: name ?? null, recoverable: frame.recoverable === true };
    if (frame.recoverable !== true) {
      if (key === "room") this._roomPositions.delete(name);
      else this._userPosition = null;
    } else {
      if (typeof frame.epoch !== "string" || !Number.isSafeInteger(frame.seq)) return;
      this._setPosition(key, name, { epoch: frame.epoch, seq: frame.seq });
      Object.assign(event, {
        epoch: frame.epoch,
        seq: frame.seq,
        recovering: frame.recovering === true,
        recovered: frame.recovered === true,
      });
    }
    this._emitEvent("recovery", event);
  }

  _onPresence(frame) {
    const { room } = frame;
    if (typeof room !== "string") return;
    const event = { room };
    if (Array.isArray(frame.members)) {
      this._members.set(room, new Set(frame.members));
      event.members = frame.members;
    } else {
      const members = this._members.get(room) ?? new Set();
      for (const user of frame.joined ?? []) members.add(user);
      for (const user of frame.left ?? []) members.delete(user);
      this._members.set(room, members);
      if (frame.joined) event.joined = frame.joined;
      if (frame.left) event.left = frame.left;
    }
    this._emitEvent("presence", event);
  }

  async _onWelcome(link, frame) {
    if (link.welcomed) return;
    link.welcomed = true;
    clearTimeout(this._timer);
    this.welcome = frame;
    this.conn = frame.conn;
    this.node = frame.node;
    this.user = frame.user ?? null;
    this.route = frame.route ?? null;
    this._members.clear(); // presence snapshots come again after the rejoins
    this._emitEvent("welcome", { conn: frame.conn, node: frame.node, user: this.user, route: this.route });
    // Rejoin before reporting "connected", so that commands sent after that see every room. Rooms with
    // recovery resume from their positions: what was missed arrives before each answer.
    const joined = [...this._rooms];
    const rooms = joined.map(([room]) => room);
    const answers = await Promise.allSettled(
      joined.map(([room, recover]) =>
        this._send(this._joinFrame(room, recover), "rejoin", room, this._openTimeout, link.ws, recover),
      ),
    );
    if (this._link !== link) return; // lost again (or closed) while rejoining: _onClose took over
    if (answers.some((a) => a.status === "rejected" && a.reason.code === "timeout")) {
      this._drop(link, 1006, "rejoining timed out"); // an unhealthy node: try again, maybe elsewhere
      return;
    }
    answers.forEach((answer, i) => {
      if (answer.status === "rejected") {
        this._rooms.delete(rooms[i]); // refused (e.g. the new token no longer allows it): say so
        this._roomPositions.delete(rooms[i]);
        const { code, message } = answer.reason;
        this._emitEvent("error", { code, message, ref: null, room: rooms[i] });
      }
    });
    this._failures = 0;
    if (this._everConnected) this.reconnects += 1;
    this._everConnected = true;
    this._setState("connected");
    for (const message of this._queue.splice(0)) link.ws.send(message);
    if (this._firstConnect !== null) this._firstConnect.resolve(this.welcome);
  }

  _onClose(link, code, reason) {
    if (this._link !== link) return;
    this._link = null;
    this._detach(link);
    clearTimeout(this._timer);
    const detail = `${code}${reason ? ` ${reason}` : ""}`;
    this._failPending(new PrismError("connection_lost", `connection lost (${detail})`, { closeCode: code }));
    // A welcomed connection that drops is an outage starting; anything earlier is a failed attempt.
    // Before the first welcome a browser cannot tell a refused upgrade (HTTP 401/403/400) from a node
    // that is down (both are 1006), so 1006 retries there too, up to connectAttempts times.
    this._failed(code, reason, shouldReconnect(code), !link.welcomed);
  }

  _failed(code, reason, retry, failedAttempt) {
    if (failedAttempt) this._failures += 1;
    const policy = this._policy;
    const first = !this._everConnected;
    const limit = first ? Math.min(this._connectAttempts, policy?.maxAttempts ?? 1) : policy?.maxAttempts;
    const willReconnect = retry && policy !== null && !(this._failures >= limit);
    this._emitEvent("close", { code, reason, willReconnect });
    if (!willReconnect) {
      const last = `last close ${code ?? "none"}${reason ? ` ${reason}` : ""}`;
      const why = first
        ? `could not connect after ${this._failures} attempt(s) (${last})`
        : `connection closed for good (${last})`;
      this._finish(new PrismError(first ? "connect_failed" : "closed", why, { closeCode: code }));
      return;
    }
    this._setState(first ? "connecting" : "reconnecting");
    this._next = (this._next + 1) % this._urls.length; // a draining node sends its clients elsewhere
    this._timer = setTimeout(() => this._attempt(), backoffDelay(this._failures, policy) * 1000);
  }

  _retryNow() {
    // The browser is back online: skip the rest of the backoff wait.
    if (this._link === null && this._timer !== null && !this._dialing && !this._closing) {
      clearTimeout(this._timer);
      this._attempt();
    }
  }

  _finish(error) {
    globalThis.removeEventListener?.("online", this._online);
    clearTimeout(this._timer);
    this._timer = null;
    this._queue.length = 0;
    this._failPending(error);
    this._setState("closed");
    if (this._firstConnect !== null && !this._everConnected) this._firstConnect.reject(error);
  }
}
