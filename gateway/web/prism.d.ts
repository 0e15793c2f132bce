// Type declarations of the Prism browser client (/prism.js). See docs/browser.md.

/** Every close code Prism sends (shared/close_codes.py), plus 1006, which browsers report themselves. */
export declare const CloseCode: Readonly<{
  NORMAL: 1000;
  GOING_AWAY: 1001;
  PROTOCOL_ERROR: 1002;
  ABNORMAL: 1006;
  INVALID_DATA: 1007;
  POLICY_VIOLATION: 1008;
  MESSAGE_TOO_BIG: 1009;
  INTERNAL_ERROR: 1011;
  SERVICE_RESTART: 1012;
  TRY_AGAIN_LATER: 1013;
  SLOW_CONSUMER: 4001;
  BACKEND_RECONNECT: 4002;
  CLOSED_BY_BACKEND: 4500;
  UNAUTHORIZED: 4501;
  FORBIDDEN: 4503;
}>;

/** Whether to reconnect after a close with this code (docs/protocol.md section 11). */
export declare function shouldReconnect(code: number | null | undefined): boolean;

export interface BackoffPolicy {
  /** Ceiling of the first delay, seconds (default 0.25). */
  base?: number;
  /** Largest ceiling, seconds (default 30). */
  cap?: number;
  /** Growth of the ceiling per failed attempt (default 2). */
  factor?: number;
  /** Failed attempts in a row before giving up (default Infinity). */
  maxAttempts?: number;
}

/** Seconds to wait before attempt `attempt` (0-based): uniform in [0, min(cap, base * factor ** attempt)]. */
export declare function backoffDelay(
  attempt: number,
  policy?: BackoffPolicy,
  random?: () => number,
): number;

/** Codes the SDK itself uses, next to the gateway's error codes (docs/protocol.md section 12). */
export type ClientErrorCode =
  | "timeout"
  | "connection_lost"
  | "closed"
  | "connect_failed"
  | "not_connected"
  | "queue_full"
  | "token_error";

export declare class PrismError extends Error {
  constructor(code: string, message: string, details?: Record<string, unknown>);
  readonly name: "PrismError";
  /** The error frame's code (invalid_room, forbidden, no_responders, timeout, ...) or a ClientErrorCode. */
  readonly code: ClientErrorCode | (string & {});
  /** The close code, for connection_lost, closed and connect_failed. */
  readonly closeCode?: number | null;
  /** The room, for a refused join or leave. */
  readonly room?: string;
}

export type ConnectionState = "idle" | "connecting" | "connected" | "reconnecting" | "closed";

export type TokenSource = string | (() => string | Promise<string>);

/** A point in a recoverable room's or user's history (docs/protocol.md, "Recovery"). */
export interface Position {
  /** The history stream's epoch: it changes only if the stream is recreated. */
  epoch: string;
  /** Every message up to this sequence has been received. */
  seq: number;
}

export interface Positions {
  rooms: Record<string, Position>;
  user: Position | null;
}

export interface PrismClientOptions {
  /** Dev-mode identity (authentication off), sent as ?user=. */
  user?: string;
  /** A JWT, or a function asked before every (re)connect; sent as the subprotocol prism.bearer.<jwt>. */
  token?: TokenSource;
  /** true (default): reconnect with the default backoff; false: never; or a policy (seconds). */
  reconnect?: boolean | BackoffPolicy;
  /** Milliseconds a command or request waits for a connection and its answer (default 10000). */
  requestTimeout?: number;
  /** Milliseconds an attempt may take to get its welcome frame (default 10000). */
  openTimeout?: number;
  /** Failed attempts in a row before connect() gives up, before the first welcome (default 5). */
  connectAttempts?: number;
  /** Start at a random URL (default true) instead of the first. */
  randomize?: boolean;
  /** Positions for the user's own stream (?recover=user): true from now on, or a Position kept earlier
   * to resume from it; every reconnect resumes from the latest (default false). */
  recover?: boolean | Position;
}

export interface JoinOptions extends CallOptions {
  /** Deliveries of the room come with positions (if it has history); rejoins resume from the latest. */
  recover?: boolean;
  /** Resume from a position kept earlier (implies recover). */
  position?: Position;
}

/** A recovery frame: positions of a room (`room`) or of the user stream (`user`) start here. */
export interface RecoveryEvent {
  room?: string;
  user?: string | null;
  /** false: no history; deliveries come without positions, and nothing else is set. */
  recoverable: boolean;
  epoch?: string;
  /** The position the messages that follow come after. */
  seq?: number;
  /** The client asked to resume from a position. */
  recovering?: boolean;
  /** ...and nothing after it is missing. recovering && !recovered: messages after `seq` may be lost. */
  recovered?: boolean;
}

export interface Welcome {
  conn: string;
  node: string;
  user: string | null;
  route: string | null;
}

export interface PresenceEvent {
  room: string;
  /** A snapshot: everyone in the room (after a join). */
  members?: string[];
  /** Changes: users who came, users who went. */
  joined?: string[];
  left?: string[];
}

export interface ErrorEvent {
  code: string;
  message: string;
  ref: number | string | null;
  /** Set when a room could not be joined again after a reconnect (it is dropped from `rooms`). */
  room?: string;
}

export interface CloseEvent {
  code: number | null;
  reason: string;
  willReconnect: boolean;
}

/** A backend delivery: text frames as strings, binary frames as ArrayBuffers. */
export type Delivery = string | ArrayBuffer;

export interface PrismEvents {
  state: ConnectionState;
  welcome: Welcome;
  message: Delivery;
  presence: PresenceEvent;
  error: ErrorEvent;
  close: CloseEvent;
  recovery: RecoveryEvent;
}

export interface CallOptions {
  /** Milliseconds (default: the client's requestTimeout). */
  timeout?: number;
}

export type Outgoing = string | ArrayBuffer | ArrayBufferView;

export declare class PrismClient {
  constructor(urls: string | string[], options?: PrismClientOptions);

  readonly state: ConnectionState;
  readonly conn: string | null;
  readonly node: string | null;
  readonly user: string | null;
  readonly route: string | null;
  /** The latest welcome frame as received. */
  readonly welcome: ({ prism: "welcome" } & Welcome & Record<string, unknown>) | null;
  /** Successful reconnections (the first connection does not count). */
  readonly reconnects: number;
  /** The rooms this client is in (a copy); joined again after every reconnect. */
  readonly rooms: ReadonlySet<string>;

  /** Users present in a presence-enabled room this client joined, sorted. */
  members(room: string): string[];
  /** The position in `room`, or in the user stream (no argument); null before the node sent one. */
  position(room?: string): Position | null;
  /** Every position held (copies: keep them to resume a later client). */
  positions(): Positions;

  /** Add a listener; returns a function that removes it. */
  on<K extends keyof PrismEvents>(type: K, listener: (value: PrismEvents[K]) => void): () => void;
  off<K extends keyof PrismEvents>(type: K, listener: (value: PrismEvents[K]) => void): void;

  /** Resolves with the first welcome; rejects with a PrismError if the first connection fails for good. */
  connect(): Promise<Welcome & Record<string, unknown>>;
  join(room: string, options?: JoinOptions): Promise<void>;
  leave(room: string, options?: CallOptions): Promise<void>;
  /** Replace this connection's token ({"prism":"refresh"}). */
  refresh(token: string, options?: CallOptions): Promise<void>;
  /** Fire-and-forget event; true if written now, false if queued until the client is connected again. */
  emit(event: string, data?: unknown): boolean;
  /** A request; resolves with the reply's data (a Uint8Array for a binary reply). */
  request<T = unknown>(event: string, data?: unknown, options?: CallOptions): Promise<T>;
  /** A raw message for client.message: a string is a text frame, anything else a binary frame. */
  send(message: Outgoing): boolean;
  /** Close for good: no reconnect. */
  close(code?: number, reason?: string): void;
}
