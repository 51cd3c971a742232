// The surface of client-js.md, checked against the shipped roomcast.d.ts
// (`npm run check`): a change to the code that breaks it fails CI.
import { Roomcast, RoomcastError } from "../roomcast.js";
import type { Joined, Member, Message, Presence, Reset, State, Welcome } from "../roomcast.js";

declare const WebSocketClass: unknown;

export async function surface(): Promise<void> {
  const rc = new Roomcast("wss://chat.example.com", {
    getToken: async () => "token",
    nick: "ann",
    WebSocket: WebSocketClass,
    reconnect: { minDelay: 500, maxDelay: 20000 },
    ping: { interval: 10000, timeout: 5000 },
    publishTimeout: 30000,
  });
  rc.on("state", (state: State) => void state);
  rc.on("error", (err: RoomcastError) => void [err.code, err.message]);
  rc.on("direct", (msg) => void [msg.from, msg.nick, msg.user, msg.body]);
  const welcome: Welcome = await rc.connected();
  void [welcome.id, welcome.server];

  const room = rc.room("lobby", { history: 50 });
  room.on("message", (m: Message) => void [m.room, m.seq, m.from, m.nick, m.user, m.ts, m.body]);
  room.on("presence", (p: Presence) => void [p.room, p.event, p.id, p.nick, p.user]);
  room.on("joined", (j: Joined) => void [j.room, j.epoch, j.seq, j.recovered, j.members]);
  room.on("reset", (r: Reset) => void [r.room, r.epoch, r.reason]);
  const joined: Joined = await room.join();
  const members: Map<string, Member> = room.members;
  void [joined, members];
  const { seq }: { seq: number } = await room.publish({ text: "hi" });
  void seq;
  await room.leave();
  await rc.direct("1", { text: "psst" });
  const rooms: { room: string; members: number }[] = await rc.rooms();
  void rooms;
  rc.close();
}
