// @ts-check
/**
 * roomcast-client: the JavaScript client of roomcast's JSON room protocol
 * (`/ws`), for browsers and Node 20+. No dependencies.
 *
 * What it keeps for the application (docs/client-js.md):
 * - each message once, in `seq` order, across reconnects, node switches and
 *   server restarts (a `reset` event when that cannot be);
 * - an app-level `ping`, so a half-open connection is noticed;
 * - publishes made while disconnected wait (bounded) and are sent after the
 *   rooms are joined again, each with an idempotency `id`, so a publish
 *   whose answer was lost appears once;
 * - tokens from `getToken`, refreshed before they expire;
 * - `room.members`, equal to the server's after every (re)join.
 *
 * @module roomcast-client
 */

/** @typedef {"connecting" | "connected" | "disconnected" | "closed"} State */

/**
 * @typedef {object} Welcome
 * @property {string} id this session's id
 * @property {number} heartbeat_ms
 * @property {number} timeout_ms
 * @property {string} server `roomcast/VERSION`
 * @property {string | null} [user] with authentication on: the token's `sub`
 */

/**
 * @typedef {object} Member
 * @property {string} id
 * @property {string | null} nick
 * @property {string | null} [user]
 */

/**
 * @typedef {object} Message
 * @property {string} room
 * @property {number} seq
 * @property {string} from
 * @property {string | null} nick
 * @property {string | null} [user]
 * @property {number} ts milliseconds since the Unix epoch
 * @property {unknown} body
 */

/**
 * @typedef {object} Presence
 * @property {string} room
 * @property {"join" | "leave"} event
 * @property {string} id
 * @property {string | null} nick
 * @property {string | null} [user]
 */

/**
 * @typedef {object} Joined
 * @property {string} room
 * @property {string} epoch
 * @property {number} seq the newest `seq` the application has of the room
 * @property {boolean} recovered every message since the last one seen arrived
 * @property {Map<string, Member>} members
 */

/**
 * @typedef {object} Reset
 * @property {string} room
 * @property {string} epoch
 * @property {"restarted" | "lost"} reason `restarted`: a new epoch (the room
 *   was forgotten and began again); `lost`: messages were gone from history
 */

/**
 * @typedef {object} Direct
 * @property {string} from
 * @property {string | null} nick
 * @property {string | null} [user]
 * @property {unknown} body
 */

/**
 * @typedef {object} Options
 * @property {string} [token] the connection token
 * @property {() => Promise<string> | string} [getToken] called for every
 *   connection and before the token expires
 * @property {string} [nick] sent after each welcome
 * @property {any} [WebSocket] a WebSocket class (default: globalThis.WebSocket)
 * @property {{ minDelay?: number, maxDelay?: number }} [reconnect] ms
 * @property {{ interval?: number, timeout?: number }} [ping] ms
 * @property {number} [publishTimeout] ms a publish may take (default 30 s)
 */

/**
 * @typedef {object} RoomOptions
 * @property {number} [history] recent messages a first join asks for
 * @property {string} [token] a room token (a private room, auth.md)
 */

/** Requests that may wait while disconnected, and their bytes. */
const MAX_WAITING = 1000;
const MAX_WAITING_BYTES = 1 << 20;

/** An error with the protocol's `code` (or `closed`, `disconnected`, `timeout`). */
export class RoomcastError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   */
  constructor(code, message) {
    super(message);
    this.name = "RoomcastError";
    /** @type {string} */
    this.code = code;
  }
}

/**
 * A minimal event emitter.
 * @template {Record<string, any>} Events
 */
class Emitter {
  constructor() {
    /** @type {Map<keyof Events, Set<(value: any) => void>>} */
    this._listeners = new Map();
  }

  /**
   * Calls `listener` for each `type` event; returns what stops it.
   * @template {keyof Events} K
   * @param {K} type
   * @param {(value: Events[K]) => void} listener
   * @returns {() => void}
   */
  on(type, listener) {
    let set = this._listeners.get(type);
    if (!set) {
      set = new Set();
      this._listeners.set(type, set);
    }
    set.add(listener);
    return () => this.off(type, listener);
  }

  /**
   * @template {keyof Events} K
   * @param {K} type
   * @param {(value: Events[K]) => void} listener
   */
  off(type, listener) {
    this._listeners.get(type)?.delete(listener);
  }

  /**
   * @template {keyof Events} K
   * @param {K} type
   * @param {Events[K]} value
   */
  _emit(type, value) {
    for (const listener of [...(this._listeners.get(type) ?? [])]) {
      try {
        listener(value);
      } catch (error) {
        // A listener's failure is the application's; the client goes on.
        setTimeout(() => {
          throw error;
        });
      }
    }
  }
}

/**
 * The `exp` of a JWT, in ms, if it has one.
 * @param {string} token
 * @returns {number | undefined}
 */
function expiryOf(token) {
  const part = token.split(".")[1];
  if (!part) return undefined;
  try {
    const base64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const json = JSON.parse(atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4)));
    return typeof json.exp === "number" ? json.exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

/** @returns {string} a fresh idempotency key */
function publishId() {
  const random = globalThis.crypto?.randomUUID?.();
  return random ?? `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

/**
 * A request on its way: sent on the connection, answered by `ref`.
 * @typedef {object} Pending
 * @property {Record<string, unknown>} frame
 * @property {(reply: any) => void} resolve
 * @property {(error: RoomcastError) => void} reject
 * @property {boolean} [publish] sent again after a reconnect (it has an `id`)
 * @property {number} [bytes]
 * @property {ReturnType<typeof setTimeout>} [timer]
 */

/**
 * @typedef {object} ClientEvents
 * @property {State} state
 * @property {RoomcastError} error
 * @property {Direct} direct
 * @property {Welcome} welcome
 */

/** @extends {Emitter<ClientEvents>} */
export class Roomcast extends Emitter {
  /**
   * @param {string} url `wss://host` (then `/ws`) or the `/ws` URL itself
   * @param {Options} [options]
   */
  constructor(url, options = {}) {
    super();
    const parsed = new URL(url);
    // A page's own address will do: http(s) becomes ws(s).
    if (parsed.protocol === "http:") parsed.protocol = "ws:";
    if (parsed.protocol === "https:") parsed.protocol = "wss:";
    if (parsed.pathname === "/" || parsed.pathname === "") parsed.pathname = "/ws";
    /** @private */
    this._url = parsed;
    /** @private */
    this._options = options;
    /** @private */
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (!this._WebSocket) throw new TypeError("no WebSocket class: pass options.WebSocket (e.g. ws's)");
    /** @type {State} */
    this.state = "connecting";
    /** @type {Welcome | null} the current connection's welcome */
    this.welcome = null;
    /** @private @type {any} */
    this._socket = null;
    /** @internal @type {Map<string, Room>} */
    this._rooms = new Map();
    /** @private @type {Map<number, Pending>} requests sent, by ref */
    this._sent = new Map();
    /** @private @type {Pending[]} publishes waiting for the connection */
    this._waiting = [];
    /** @private */
    this._waitingBytes = 0;
    /** @private */
    this._nextRef = 1;
    /** @private */
    this._attempt = 0;
    /** @private @type {ReturnType<typeof setTimeout> | undefined} */
    this._retryTimer = undefined;
    /** @private @type {ReturnType<typeof setTimeout> | undefined} */
    this._pingTimer = undefined;
    /** @private @type {ReturnType<typeof setTimeout> | undefined} */
    this._refreshTimer = undefined;
    /** @private @type {{ resolve: (w: Welcome) => void, reject: (e: RoomcastError) => void }[]} */
    this._connectedWaiters = [];
    /** @private rooms still rejoining after this connection's welcome */
    this._rejoining = 0;
    /** @private */
    this._nick = options.nick;
    /** @private @type {string | undefined} the current connection's token */
    this._currentToken = undefined;
    /** @private @type {RoomcastError | null} why the server will not take this client again */
    this._fatal = null;
    /** @private why the client is closed */
    this._closedBy = new RoomcastError("closed", "the client was closed");
    /** @internal counts connections: a rejoin of an older one is not this one's */
    this._generation = 0;
    this._open();
  }

  /**
   * Resolves with the welcome once connected (at once if connected).
   * @returns {Promise<Welcome>}
   */
  connected() {
    if (this.state === "connected" && this.welcome) return Promise.resolve(this.welcome);
    if (this.state === "closed") return Promise.reject(this._closedBy);
    return new Promise((resolve, reject) => this._connectedWaiters.push({ resolve, reject }));
  }

  /**
   * The room called `name` (one object per name).
   * @param {string} name
   * @param {RoomOptions} [options]
   * @returns {Room}
   */
  room(name, options = {}) {
    let room = this._rooms.get(name);
    if (!room) {
      room = new Room(this, name, options);
      this._rooms.set(name, room);
    }
    return room;
  }

  /**
   * Sends `body` to session `id`; resolves when the server has.
   * @param {string} id
   * @param {unknown} body
   * @returns {Promise<void>}
   */
  async direct(id, body) {
    await this._request({ type: "direct", to: id, body });
  }

  /**
   * Every room with members.
   * @returns {Promise<{ room: string, members: number }[]>}
   */
  async rooms() {
    const reply = await this._request({ type: "rooms" });
    return reply.rooms;
  }

  /**
   * Changes the nick (kept for the next connections too).
   * @param {string} name
   * @returns {Promise<void>}
   */
  async nick(name) {
    this._nick = name;
    await this._request({ type: "nick", name });
  }

  /** Closes the connection for good: state `closed`, no reconnect. */
  close() {
    if (this.state === "closed") return;
    this._setState("closed");
    this._stopTimers();
    clearTimeout(this._refreshTimer);
    const socket = this._socket;
    this._socket = null;
    if (socket) {
      detach(socket);
      socket.close(1000);
    }
    const error = this._closedBy;
    this._failAll(error);
    for (const waiter of this._connectedWaiters.splice(0)) waiter.reject(error);
  }

  // ---- the connection ----

  /** @private */
  async _open() {
    this._setState("connecting");
    let token;
    try {
      token = await this._token();
    } catch (error) {
      this._emit("error", new RoomcastError("unauthorized", `getToken failed: ${describe(error)}`));
      return this._retry();
    }
    if (this.state === "closed") return;
    const url = new URL(this._url);
    if (token) url.searchParams.set("token", token);
    let socket;
    try {
      socket = new this._WebSocket(url.toString(), "roomcast.v1");
    } catch (error) {
      this._emit("error", new RoomcastError("closed", `cannot connect: ${describe(error)}`));
      return this._retry();
    }
    this._socket = socket;
    this._currentToken = token;
    socket.onmessage = (/** @type {{ data: any }} */ event) => this._frame(socket, event.data);
    socket.onclose = (/** @type {{ code: number, reason: string }} */ event) =>
      this._dropped(socket, event.code, event.reason);
    socket.onerror = () => {};
  }

  /**
   * The token for the next connection.
   * @private
   * @returns {Promise<string | undefined>}
   */
  async _token() {
    if (this._options.getToken) return await this._options.getToken();
    return this._options.token;
  }

  /**
   * The connection `socket` is gone (closed, or found dead).
   * @private
   * @param {any} socket
   * @param {number} code
   * @param {string} reason
   */
  _dropped(socket, code, reason) {
    if (socket !== this._socket) return;
    detach(socket);
    this._socket = null;
    this.welcome = null;
    this._stopTimers();
    // Requests on their way: publishes wait to be sent again (same id);
    // the others fail (a room's join is made again on reconnect).
    const publishes = [];
    const dropped = new RoomcastError("disconnected", "the connection dropped");
    const sent = [...this._sent.values()];
    this._sent.clear();
    for (const pending of sent) {
      if (pending.publish) publishes.push(pending);
      else pending.reject(dropped);
    }
    this._waiting.unshift(...publishes);
    for (const room of this._rooms.values()) room._disconnected();
    if (this.state === "closed") return;
    if (this._fatal) {
      const error = this._fatal;
      this._fatal = null;
      this._closedBy = error;
      this._setState("closed");
      this._failAll(error);
      for (const waiter of this._connectedWaiters.splice(0)) waiter.reject(error);
      return;
    }
    this._setState("disconnected");
    void code;
    void reason;
    this._retry();
  }

  /** @private */
  _retry() {
    if (this.state === "closed") return;
    const min = this._options.reconnect?.minDelay ?? 500;
    const max = this._options.reconnect?.maxDelay ?? 20000;
    // Exponential backoff with full jitter.
    const ceiling = Math.min(max, min * 2 ** Math.min(this._attempt, 20));
    this._attempt += 1;
    const delay = Math.max(min / 2, Math.random() * ceiling);
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => this._open(), delay);
  }

  /**
   * @private
   * @param {State} state
   */
  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit("state", state);
  }

  /** @private */
  _stopTimers() {
    clearTimeout(this._pingTimer);
    clearTimeout(this._retryTimer);
  }

  /**
   * @private
   * @param {RoomcastError} error
   */
  _failAll(error) {
    for (const pending of this._sent.values()) pending.reject(error);
    this._sent.clear();
    for (const pending of this._waiting.splice(0)) pending.reject(error);
    this._waitingBytes = 0;
    for (const room of this._rooms.values()) room._closed(error);
  }

  /**
   * One frame from the server.
   * @private
   * @param {any} socket
   * @param {any} data
   */
  _frame(socket, data) {
    if (socket !== this._socket || typeof data !== "string") return;
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (frame.ref !== undefined && this._sent.has(frame.ref)) return this._reply(frame);
    switch (frame.type) {
      case "welcome":
        return this._welcomed(frame);
      case "message":
      case "presence":
        return this._rooms.get(frame.room)?._frame(frame);
      case "left":
        return this._rooms.get(frame.room)?._revoked();
      case "direct":
        return this._emit("direct", frame);
      case "error":
        // A late answer to a request given up on has a `ref`; the others
        // come before the server closes.
        return frame.ref === undefined ? this._serverError(frame) : undefined;
    }
  }

  /**
   * An `error` without a request: the server is about to close.
   * @private
   * @param {{ code: string, message: string }} frame
   */
  _serverError(frame) {
    const error = new RoomcastError(frame.code, frame.message);
    // Trying again would be refused again: a bad token, or an expired one
    // when there is no `getToken` for a fresh one.
    if (frame.code === "unauthorized" || (frame.code === "token_expired" && !this._options.getToken)) {
      this._fatal = error;
    }
    this._emit("error", error);
  }

  /**
   * @private
   * @param {Welcome} welcome
   */
  _welcomed(welcome) {
    this.welcome = welcome;
    this._attempt = 0;
    this._schedulePing();
    this._scheduleRefresh();
    if (this._nick !== undefined) this._send({ type: "nick", name: this._nick }, () => {}, () => {});
    this._setState("connected");
    this._emit("welcome", welcome);
    for (const waiter of this._connectedWaiters.splice(0)) waiter.resolve(welcome);
    // Publishes that waited go once every room is joined again.
    const generation = ++this._generation;
    const rooms = [...this._rooms.values()].filter((room) => room._wanted);
    this._rejoining = rooms.length;
    for (const room of rooms) {
      room._rejoin().then(
        () => this._rejoined(generation),
        () => this._rejoined(generation),
      );
    }
    if (rooms.length === 0) this._flush();
  }

  /**
   * @private
   * @param {number} generation
   */
  _rejoined(generation) {
    if (generation !== this._generation) return;
    this._rejoining -= 1;
    if (this._rejoining === 0) this._flush();
  }

  /** @private */
  _schedulePing() {
    const interval = this._options.ping?.interval ?? 10000;
    const timeout = this._options.ping?.timeout ?? 5000;
    clearTimeout(this._pingTimer);
    this._pingTimer = setTimeout(() => {
      const socket = this._socket;
      if (!socket || !this.welcome) return;
      const dead = setTimeout(() => {
        // No pong: the connection is half-open. Give up on it now.
        if (socket === this._socket) {
          try {
            socket.close(4000, "no pong");
          } catch {}
          this._dropped(socket, 4000, "no pong");
        }
      }, timeout);
      this._send(
        { type: "ping" },
        () => {
          clearTimeout(dead);
          if (socket === this._socket) this._schedulePing();
        },
        () => clearTimeout(dead),
      );
    }, interval);
  }

  /** @private */
  _scheduleRefresh() {
    clearTimeout(this._refreshTimer);
    if (!this._options.getToken || !this._currentToken) return;
    const exp = expiryOf(this._currentToken);
    if (exp === undefined) return;
    const left = exp - Date.now();
    // Refresh when a tenth of its life is left: at most a minute before,
    // and for short tokens at least 5 s (or half its life) before, so that
    // fetching one and sending it fit before the server's deadline.
    const margin = Math.min(60000, Math.max(left / 10, Math.min(5000, left / 2)));
    const at = Math.max(1000, left - margin);
    this._refreshTimer = setTimeout(async () => {
      if (this.state !== "connected") return;
      try {
        const token = await this._token();
        if (!token || this.state !== "connected") return;
        await this._request({ type: "auth", token });
        this._currentToken = token;
      } catch (error) {
        this._emit("error", error instanceof RoomcastError ? error : new RoomcastError("unauthorized", describe(error)));
      }
      this._scheduleRefresh();
    }, at);
  }

  /**
   * Sends `frame` with a fresh `ref`; `resolve` gets the reply.
   * @private
   * @param {Record<string, unknown>} frame
   * @param {(reply: any) => void} resolve
   * @param {(error: RoomcastError) => void} reject
   * @param {Partial<Pending>} [extra]
   */
  _send(frame, resolve, reject, extra = {}) {
    const ref = this._nextRef++;
    /** @type {Pending} */
    const pending = { ...extra, frame, resolve, reject };
    this._sent.set(ref, pending);
    this._socket.send(JSON.stringify({ ...frame, ref }));
  }

  /**
   * A request now, or `disconnected`; resolves with the reply. `onReply`
   * takes the reply as it arrives, before the frames behind it (a socket
   * may hand several over in one tick, before any promise continues).
   * @internal
   * @param {Record<string, unknown>} frame
   * @param {(reply: any) => void} [onReply]
   * @returns {Promise<any>}
   */
  _request(frame, onReply) {
    if (this.state === "closed") return Promise.reject(this._closedBy);
    if (this.state !== "connected") {
      return Promise.reject(new RoomcastError("disconnected", "not connected"));
    }
    return new Promise((resolve, reject) =>
      this._send(
        frame,
        (reply) => {
          onReply?.(reply);
          resolve(reply);
        },
        reject,
      ),
    );
  }

  /**
   * A reply to a request of ours.
   * @private
   * @param {any} frame
   */
  _reply(frame) {
    const pending = this._sent.get(frame.ref);
    if (!pending) return;
    this._sent.delete(frame.ref);
    if (frame.type !== "error") return pending.resolve(frame);
    if (pending.publish && frame.code === "unavailable") {
      // Not published, and never will be: send it again, same id, a little later.
      return this._later(pending);
    }
    pending.reject(new RoomcastError(frame.code, frame.message));
  }

  /**
   * A publish `unavailable` now: tried again after a pause.
   * @private
   * @param {Pending} pending
   */
  _later(pending) {
    setTimeout(() => {
      if (pending.timer === undefined) return;
      this._enqueue(pending, true);
    }, 250 + Math.random() * 500);
  }

  /**
   * A publish: sent now, or waiting for the connection (bounded).
   * @param {Record<string, unknown>} frame
   * @returns {Promise<{ seq: number }>}
   * @internal
   */
  _publish(frame) {
    if (this.state === "closed") return Promise.reject(this._closedBy);
    return new Promise((resolve, reject) => {
      const bytes = JSON.stringify(frame).length;
      /** @type {Pending} */
      const pending = {
        frame,
        bytes,
        publish: true,
        resolve: (reply) => {
          clearTimeout(pending.timer);
          pending.timer = undefined;
          resolve({ seq: reply.seq });
        },
        reject: (error) => {
          clearTimeout(pending.timer);
          pending.timer = undefined;
          reject(error);
        },
      };
      const timeout = this._options.publishTimeout ?? 30000;
      pending.timer = setTimeout(() => this._timedOut(pending), timeout);
      if (!this._enqueue(pending, false)) {
        pending.reject(new RoomcastError("disconnected", "too many requests wait for the connection"));
      }
    });
  }

  /**
   * Sends `pending` if the connection is up and every room is joined
   * again, else keeps it (false: no room, `force`d in anyway).
   * @private
   * @param {Pending} pending
   * @param {boolean} force
   */
  _enqueue(pending, force) {
    if (this._ready() && this._roomReady(pending) && !this._waiting.some((other) => other.frame.room === pending.frame.room)) {
      this._send(pending.frame, pending.resolve, pending.reject, pending);
      return true;
    }
    const bytes = pending.bytes ?? 0;
    if (!force && (this._waiting.length >= MAX_WAITING || this._waitingBytes + bytes > MAX_WAITING_BYTES)) {
      return false;
    }
    this._waiting.push(pending);
    this._waitingBytes += bytes;
    return true;
  }

  /** @private */
  _ready() {
    return this.state === "connected" && this._rejoining === 0 && this._socket !== null;
  }

  /**
   * @private
   * @param {Pending} pending
   */
  _timedOut(pending) {
    if (pending.timer === undefined) return;
    const at = this._waiting.indexOf(pending);
    if (at >= 0) {
      this._waiting.splice(at, 1);
      this._waitingBytes -= pending.bytes ?? 0;
    }
    for (const [ref, sent] of this._sent) if (sent === pending) this._sent.delete(ref);
    pending.reject(new RoomcastError("timeout", "no answer within publishTimeout"));
  }

  /** Sends what waited, in order. @internal */
  _flush() {
    if (!this._ready()) return;
    // In order; a room joined again later keeps its publishes (and their
    // order) until then.
    const blocked = new Set();
    const keep = [];
    for (const pending of this._waiting.splice(0)) {
      const room = /** @type {string} */ (pending.frame.room);
      if (blocked.has(room) || !this._roomReady(pending)) {
        blocked.add(room);
        keep.push(pending);
        continue;
      }
      this._waitingBytes -= pending.bytes ?? 0;
      this._send(pending.frame, pending.resolve, pending.reject, pending);
    }
    this._waiting = keep;
  }

  /**
   * Whether a publish may go: its room is joined, or not one this client
   * keeps joined (then the server answers).
   * @private
   * @param {Pending} pending
   */
  _roomReady(pending) {
    const room = this._rooms.get(/** @type {string} */ (pending.frame.room));
    return !room || !room._wanted || room.joined;
  }

  /**
   * @param {string} name
   * @internal
   */
  _forget(name) {
    this._rooms.delete(name);
  }
}

/**
 * @typedef {object} RoomEvents
 * @property {Message} message
 * @property {Presence} presence
 * @property {Joined} joined
 * @property {Reset} reset
 * @property {{ room: string, reason: string }} left
 */

/** @extends {Emitter<RoomEvents>} */
export class Room extends Emitter {
  /**
   * Made by `Roomcast.room`.
   * @param {Roomcast} client
   * @param {string} name
   * @param {RoomOptions} options
   */
  constructor(client, name, options) {
    super();
    /** @private */
    this._client = client;
    /** @readonly */
    this.name = name;
    /** @private */
    this._options = options;
    /** @type {Map<string, Member>} the members, kept current */
    this.members = new Map();
    /** @type {boolean} joined on the current connection */
    this.joined = false;
    /** @internal the application wants to be in the room (rejoined on reconnect) */
    this._wanted = false;
    /** @private @type {string | null} */
    this._epoch = null;
    /** @private @type {number | null} the newest seq handed to the application */
    this._seq = null;
    /** @private @type {{ resolve: (j: Joined) => void, reject: (e: RoomcastError) => void }[]} */
    this._waiters = [];
    /** @private @type {any[] | null} presence events while the member list is on its way */
    this._buffered = null;
  }

  /**
   * Joins the room (again on every reconnect until `leave`). Resolves with
   * the first `joined`, on this connection or the next; rejects with the
   * server's refusal (`room_full`, `forbidden`, ...), and then the room is
   * not joined again.
   * @returns {Promise<Joined>}
   */
  join() {
    if (this._wanted && this.joined) return Promise.resolve(this._joinedEvent(true));
    const joined = new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
    if (!this._wanted) {
      this._wanted = true;
      this._client._rooms.set(this.name, this);
      if (this._client.state === "connected") void this._rejoin().catch(() => {});
    }
    return /** @type {Promise<Joined>} */ (joined);
  }

  /**
   * Leaves the room (and stops rejoining it).
   * @returns {Promise<void>}
   */
  async leave() {
    this._wanted = false;
    const was = this.joined;
    this.joined = false;
    this.members.clear();
    this._client._forget(this.name);
    this._settle(null, new RoomcastError("left", "left before the join was answered"));
    if (was && this._client.state === "connected") await this._client._request({ type: "leave", room: this.name });
  }

  /**
   * Publishes `body`; resolves with its `seq` once the server has it.
   * @param {unknown} body
   * @returns {Promise<{ seq: number }>}
   */
  publish(body) {
    return this._client._publish({ type: "publish", room: this.name, body, id: publishId() });
  }

  /**
   * Sends the join (a first one, or again after a reconnect), takes the
   * `joined` (history; `reset` if the room started again or lost
   * messages), then the member list.
   * @internal
   * @returns {Promise<Joined>}
   */
  _rejoin() {
    const first = this._seq === null;
    /** @type {Record<string, unknown>} */
    const frame = { type: "join", room: this.name };
    if (first) {
      // At least one message: its seq says where the room is, so that a
      // rejoin can ask for everything after it.
      frame.history = Math.max(1, this._options.history ?? 0);
    } else {
      frame.since = this._seq;
      if (this._epoch) frame.epoch = this._epoch;
    }
    if (this._options.token) frame.token = this._options.token;
    return new Promise((resolve, reject) => {
      /** @param {unknown} error */
      const fail = (error) => {
        this._buffered = null;
        const refused =
          error instanceof RoomcastError && !["disconnected", "unavailable", "closed"].includes(error.code);
        if (refused) {
          // Not joined again on reconnect.
          this._wanted = false;
          this._client._forget(this.name);
          this._settle(null, /** @type {RoomcastError} */ (error));
        } else if (error instanceof RoomcastError && error.code === "unavailable") {
          // The server cannot now (a cluster without Redis): again in a moment.
          const generation = this._client._generation;
          setTimeout(() => {
            const same = this._client._generation === generation && this._client.state === "connected";
            if (same && this._wanted && !this.joined) this._rejoin().catch(() => {});
          }, 300 + Math.random() * 700);
        }
        reject(error);
      };
      // Taken as the reply arrives, before the frames after it (a socket
      // may hand several over at once, before any promise continues).
      const joined = (/** @type {any} */ reply) => {
        if (!this._wanted) {
          // Left while the join was on its way: the server has it joined.
          void this._client._request({ type: "leave", room: this.name }).catch(() => {});
          return resolve(this._joinedEvent(true));
        }
        this._buffered = [];
        const event = this._take(reply, first);
        this._client._request({ type: "members", room: this.name }).then((members) => {
          this.members = new Map(members.members.map((/** @type {Member} */ m) => [m.id, m]));
          this.joined = true;
          this._client._flush();
          // What changed while the list was on its way (applied again if
          // the list has it already: the last event of each member wins).
          const buffered = this._buffered ?? [];
          this._buffered = null;
          for (const presence of buffered) this._presence(presence);
          event.members = this.members;
          this._emit("joined", event);
          this._settle(event, null);
          resolve(event);
        }, fail);
      };
      this._client._request(frame, joined).catch(fail);
    });
  }

  /**
   * @private
   * @param {Joined | null} joined
   * @param {RoomcastError | null} error
   */
  _settle(joined, error) {
    for (const waiter of this._waiters.splice(0)) {
      if (joined) waiter.resolve(joined);
      else if (error) waiter.reject(error);
    }
  }

  /**
   * What a `joined` means for the application.
   * @private
   * @param {any} joined
   * @param {boolean} first
   * @returns {Joined}
   */
  _take(joined, first) {
    const history = /** @type {Message[]} */ (joined.history ?? []);
    let recovered = true;
    if (first) {
      const wanted = this._options.history ?? 0;
      this._epoch = joined.epoch;
      this._seq = history.length > 0 ? history[history.length - 1].seq : 0;
      if (wanted > 0) for (const message of history.slice(-wanted)) this._emit("message", message);
    } else {
      const restarted = this._epoch !== null && joined.epoch !== this._epoch;
      recovered = joined.recovered === true && !restarted;
      if (!recovered) {
        this._epoch = joined.epoch;
        if (restarted) this._seq = 0;
        this._emit("reset", { room: this.name, epoch: joined.epoch, reason: restarted ? "restarted" : "lost" });
      }
      for (const message of history) this._deliver(message);
    }
    return this._joinedEvent(recovered);
  }

  /**
   * @private
   * @param {boolean} recovered
   * @returns {Joined}
   */
  _joinedEvent(recovered) {
    return { room: this.name, epoch: this._epoch ?? "", seq: this._seq ?? 0, recovered, members: this.members };
  }

  /**
   * A message in order, once.
   * @private
   * @param {Message} message
   */
  _deliver(message) {
    if (this._seq !== null && message.seq <= this._seq) return;
    this._seq = message.seq;
    this._emit("message", message);
  }

  /**
   * A `message` or `presence` of this room.
   * @internal
   * @param {any} frame
   */
  _frame(frame) {
    if (frame.type === "message") {
      // Before its `joined`, a message is the server's to send again.
      if (this._seq !== null && (this.joined || this._buffered)) this._deliver(frame);
      return;
    }
    if (this._buffered) this._buffered.push(frame);
    else if (this.joined) this._presence(frame);
  }

  /**
   * @private
   * @param {any} frame
   */
  _presence(frame) {
    if (frame.event === "join") this.members.set(frame.id, memberOf(frame));
    else this.members.delete(frame.id);
    this._emit("presence", frame);
  }

  /** The connection dropped. @internal */
  _disconnected() {
    this.joined = false;
    this._buffered = null;
  }

  /**
   * The client closed.
   * @internal
   * @param {RoomcastError} error
   */
  _closed(error) {
    this.joined = false;
    this._settle(null, error);
  }

  /** A `left` the room did not ask for (a refresh took the grant away). @internal */
  _revoked() {
    this._wanted = false;
    this.joined = false;
    this.members.clear();
    this._client._forget(this.name);
    this._emit("left", { room: this.name, reason: "revoked" });
  }
}

/**
 * @param {any} frame
 * @returns {Member}
 */
function memberOf(frame) {
  /** @type {Member} */
  const member = { id: frame.id, nick: frame.nick ?? null };
  if ("user" in frame) member.user = frame.user;
  return member;
}

/** @param {any} socket */
function detach(socket) {
  socket.onmessage = null;
  socket.onclose = null;
  socket.onerror = null;
}

/** @param {unknown} error */
function describe(error) {
  return error instanceof Error ? error.message : String(error);
}
