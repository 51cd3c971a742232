/** An error with the protocol's `code` (or `closed`, `disconnected`, `timeout`). */
export class RoomcastError extends Error {
    /**
     * @param {string} code
     * @param {string} message
     */
    constructor(code: string, message: string);
    /** @type {string} */
    code: string;
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
export class Roomcast extends Emitter<ClientEvents> {
    /**
     * @param {string} url `wss://host` (then `/ws`) or the `/ws` URL itself
     * @param {Options} [options]
     */
    constructor(url: string, options?: Options);
    /** @private */
    private _url;
    /** @private */
    private _options;
    /** @private */
    private _WebSocket;
    /** @type {State} */
    state: State;
    /** @type {Welcome | null} the current connection's welcome */
    welcome: Welcome | null;
    /** @private @type {any} */
    private _socket;
    /** @internal @type {Map<string, Room>} */
    _rooms: Map<string, Room>;
    /** @private @type {Map<number, Pending>} requests sent, by ref */
    private _sent;
    /** @private @type {Pending[]} publishes waiting for the connection */
    private _waiting;
    /** @private */
    private _waitingBytes;
    /** @private */
    private _nextRef;
    /** @private */
    private _attempt;
    /** @private @type {ReturnType<typeof setTimeout> | undefined} */
    private _retryTimer;
    /** @private @type {ReturnType<typeof setTimeout> | undefined} */
    private _pingTimer;
    /** @private @type {ReturnType<typeof setTimeout> | undefined} */
    private _refreshTimer;
    /** @private @type {{ resolve: (w: Welcome) => void, reject: (e: RoomcastError) => void }[]} */
    private _connectedWaiters;
    /** @private rooms still rejoining after this connection's welcome */
    private _rejoining;
    /** @private */
    private _nick;
    /** @private @type {string | undefined} the current connection's token */
    private _currentToken;
    /** @private @type {RoomcastError | null} why the server will not take this client again */
    private _fatal;
    /** @private why the client is closed */
    private _closedBy;
    /** @internal counts connections: a rejoin of an older one is not this one's */
    _generation: number;
    /**
     * Resolves with the welcome once connected (at once if connected).
     * @returns {Promise<Welcome>}
     */
    connected(): Promise<Welcome>;
    /**
     * The room called `name` (one object per name).
     * @param {string} name
     * @param {RoomOptions} [options]
     * @returns {Room}
     */
    room(name: string, options?: RoomOptions): Room;
    /**
     * Sends `body` to session `id`; resolves when the server has.
     * @param {string} id
     * @param {unknown} body
     * @returns {Promise<void>}
     */
    direct(id: string, body: unknown): Promise<void>;
    /**
     * Every room with members.
     * @returns {Promise<{ room: string, members: number }[]>}
     */
    rooms(): Promise<{
        room: string;
        members: number;
    }[]>;
    /**
     * Changes the nick (kept for the next connections too).
     * @param {string} name
     * @returns {Promise<void>}
     */
    nick(name: string): Promise<void>;
    /** Closes the connection for good: state `closed`, no reconnect. */
    close(): void;
    /** @private */
    private _open;
    /**
     * The token for the next connection.
     * @private
     * @returns {Promise<string | undefined>}
     */
    private _token;
    /**
     * The connection `socket` is gone (closed, or found dead).
     * @private
     * @param {any} socket
     * @param {number} code
     * @param {string} reason
     */
    private _dropped;
    /** @private */
    private _retry;
    /**
     * @private
     * @param {State} state
     */
    private _setState;
    /** @private */
    private _stopTimers;
    /**
     * @private
     * @param {RoomcastError} error
     */
    private _failAll;
    /**
     * One frame from the server.
     * @private
     * @param {any} socket
     * @param {any} data
     */
    private _frame;
    /**
     * An `error` without a request: the server is about to close.
     * @private
     * @param {{ code: string, message: string }} frame
     */
    private _serverError;
    /**
     * @private
     * @param {Welcome} welcome
     */
    private _welcomed;
    /**
     * @private
     * @param {number} generation
     */
    private _rejoined;
    /** @private */
    private _schedulePing;
    /** @private */
    private _scheduleRefresh;
    /**
     * Sends `frame` with a fresh `ref`; `resolve` gets the reply.
     * @private
     * @param {Record<string, unknown>} frame
     * @param {(reply: any) => void} resolve
     * @param {(error: RoomcastError) => void} reject
     * @param {Partial<Pending>} [extra]
     */
    private _send;
    /**
     * A request now, or `disconnected`; resolves with the reply. `onReply`
     * takes the reply as it arrives, before the frames behind it (a socket
     * may hand several over in one tick, before any promise continues).
     * @internal
     * @param {Record<string, unknown>} frame
     * @param {(reply: any) => void} [onReply]
     * @returns {Promise<any>}
     */
    _request(frame: Record<string, unknown>, onReply?: (reply: any) => void): Promise<any>;
    /**
     * A reply to a request of ours.
     * @private
     * @param {any} frame
     */
    private _reply;
    /**
     * A publish `unavailable` now: tried again after a pause.
     * @private
     * @param {Pending} pending
     */
    private _later;
    /**
     * A publish: sent now, or waiting for the connection (bounded).
     * @param {Record<string, unknown>} frame
     * @returns {Promise<{ seq: number }>}
     * @internal
     */
    _publish(frame: Record<string, unknown>): Promise<{
        seq: number;
    }>;
    /**
     * Sends `pending` if the connection is up and every room is joined
     * again, else keeps it (false: no room, `force`d in anyway).
     * @private
     * @param {Pending} pending
     * @param {boolean} force
     */
    private _enqueue;
    /** @private */
    private _ready;
    /**
     * @private
     * @param {Pending} pending
     */
    private _timedOut;
    /** Sends what waited, in order. @internal */
    _flush(): void;
    /**
     * Whether a publish may go: its room is joined, or not one this client
     * keeps joined (then the server answers).
     * @private
     * @param {Pending} pending
     */
    private _roomReady;
    /**
     * @param {string} name
     * @internal
     */
    _forget(name: string): void;
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
export class Room extends Emitter<RoomEvents> {
    /**
     * Made by `Roomcast.room`.
     * @param {Roomcast} client
     * @param {string} name
     * @param {RoomOptions} options
     */
    constructor(client: Roomcast, name: string, options: RoomOptions);
    /** @private */
    private _client;
    /** @readonly */
    readonly name: string;
    /** @private */
    private _options;
    /** @type {Map<string, Member>} the members, kept current */
    members: Map<string, Member>;
    /** @type {boolean} joined on the current connection */
    joined: boolean;
    /** @internal the application wants to be in the room (rejoined on reconnect) */
    _wanted: boolean;
    /** @private @type {string | null} */
    private _epoch;
    /** @private @type {number | null} the newest seq handed to the application */
    private _seq;
    /** @private @type {{ resolve: (j: Joined) => void, reject: (e: RoomcastError) => void }[]} */
    private _waiters;
    /** @private @type {any[] | null} presence events while the member list is on its way */
    private _buffered;
    /**
     * Joins the room (again on every reconnect until `leave`). Resolves with
     * the first `joined`, on this connection or the next; rejects with the
     * server's refusal (`room_full`, `forbidden`, ...), and then the room is
     * not joined again.
     * @returns {Promise<Joined>}
     */
    join(): Promise<Joined>;
    /**
     * Leaves the room (and stops rejoining it).
     * @returns {Promise<void>}
     */
    leave(): Promise<void>;
    /**
     * Publishes `body`; resolves with its `seq` once the server has it.
     * @param {unknown} body
     * @returns {Promise<{ seq: number }>}
     */
    publish(body: unknown): Promise<{
        seq: number;
    }>;
    /**
     * Sends the join (a first one, or again after a reconnect), takes the
     * `joined` (history; `reset` if the room started again or lost
     * messages), then the member list.
     * @internal
     * @returns {Promise<Joined>}
     */
    _rejoin(): Promise<Joined>;
    /**
     * @private
     * @param {Joined | null} joined
     * @param {RoomcastError | null} error
     */
    private _settle;
    /**
     * What a `joined` means for the application.
     * @private
     * @param {any} joined
     * @param {boolean} first
     * @returns {Joined}
     */
    private _take;
    /**
     * @private
     * @param {boolean} recovered
     * @returns {Joined}
     */
    private _joinedEvent;
    /**
     * A message in order, once.
     * @private
     * @param {Message} message
     */
    private _deliver;
    /**
     * A `message` or `presence` of this room.
     * @internal
     * @param {any} frame
     */
    _frame(frame: any): void;
    /**
     * @private
     * @param {any} frame
     */
    private _presence;
    /** The connection dropped. @internal */
    _disconnected(): void;
    /**
     * The client closed.
     * @internal
     * @param {RoomcastError} error
     */
    _closed(error: RoomcastError): void;
    /** A `left` the room did not ask for (a refresh took the grant away). @internal */
    _revoked(): void;
}
export type State = "connecting" | "connected" | "disconnected" | "closed";
export type Welcome = {
    /**
     * this session's id
     */
    id: string;
    heartbeat_ms: number;
    timeout_ms: number;
    /**
     * `roomcast/VERSION`
     */
    server: string;
    /**
     * with authentication on: the token's `sub`
     */
    user?: string | null | undefined;
};
export type Member = {
    id: string;
    nick: string | null;
    user?: string | null | undefined;
};
export type Message = {
    room: string;
    seq: number;
    from: string;
    nick: string | null;
    user?: string | null | undefined;
    /**
     * milliseconds since the Unix epoch
     */
    ts: number;
    body: unknown;
};
export type Presence = {
    room: string;
    event: "join" | "leave";
    id: string;
    nick: string | null;
    user?: string | null | undefined;
};
export type Joined = {
    room: string;
    epoch: string;
    /**
     * the newest `seq` the application has of the room
     */
    seq: number;
    /**
     * every message since the last one seen arrived
     */
    recovered: boolean;
    members: Map<string, Member>;
};
export type Reset = {
    room: string;
    epoch: string;
    /**
     * `restarted`: a new epoch (the room
     * was forgotten and began again); `lost`: messages were gone from history
     */
    reason: "restarted" | "lost";
};
export type Direct = {
    from: string;
    nick: string | null;
    user?: string | null | undefined;
    body: unknown;
};
export type Options = {
    /**
     * the connection token
     */
    token?: string | undefined;
    /**
     * called for every
     * connection and before the token expires
     */
    getToken?: (() => Promise<string> | string) | undefined;
    /**
     * sent after each welcome
     */
    nick?: string | undefined;
    /**
     * a WebSocket class (default: globalThis.WebSocket)
     */
    WebSocket?: any;
    /**
     * ms
     */
    reconnect?: {
        minDelay?: number;
        maxDelay?: number;
    } | undefined;
    /**
     * ms
     */
    ping?: {
        interval?: number;
        timeout?: number;
    } | undefined;
    /**
     * ms a publish may take (default 30 s)
     */
    publishTimeout?: number | undefined;
};
export type RoomOptions = {
    /**
     * recent messages a first join asks for
     */
    history?: number | undefined;
    /**
     * a room token (a private room, auth.md)
     */
    token?: string | undefined;
};
/**
 * A request on its way: sent on the connection, answered by `ref`.
 */
export type Pending = {
    frame: Record<string, unknown>;
    resolve: (reply: any) => void;
    reject: (error: RoomcastError) => void;
    /**
     * sent again after a reconnect (it has an `id`)
     */
    publish?: boolean | undefined;
    bytes?: number | undefined;
    timer?: number | undefined;
};
export type ClientEvents = {
    state: State;
    error: RoomcastError;
    direct: Direct;
    welcome: Welcome;
};
export type RoomEvents = {
    message: Message;
    presence: Presence;
    joined: Joined;
    reset: Reset;
    left: {
        room: string;
        reason: string;
    };
};
/**
 * A minimal event emitter.
 * @template {Record<string, any>} Events
 */
declare class Emitter<Events extends Record<string, any>> {
    /** @type {Map<keyof Events, Set<(value: any) => void>>} */
    _listeners: Map<keyof Events, Set<(value: any) => void>>;
    /**
     * Calls `listener` for each `type` event; returns what stops it.
     * @template {keyof Events} K
     * @param {K} type
     * @param {(value: Events[K]) => void} listener
     * @returns {() => void}
     */
    on<K extends keyof Events>(type: K, listener: (value: Events[K]) => void): () => void;
    /**
     * @template {keyof Events} K
     * @param {K} type
     * @param {(value: Events[K]) => void} listener
     */
    off<K extends keyof Events>(type: K, listener: (value: Events[K]) => void): void;
    /**
     * @template {keyof Events} K
     * @param {K} type
     * @param {Events[K]} value
     */
    _emit<K extends keyof Events>(type: K, value: Events[K]): void;
}
export {};
