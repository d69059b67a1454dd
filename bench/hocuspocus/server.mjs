// Hocuspocus as a third server for bench/run.sh: in memory (no extensions, no persistence, no
// onAuthenticate hook, so any token is accepted), listening on 127.0.0.1:$PORT.
//
// The document name comes from each message (a lib0 varString before every frame), not from
// the URL path; plait-bench --protocol hocuspocus sends the room name as the document name.
//
// `timeout` is raised from 60 s: Hocuspocus closes a socket that sent nothing for that long (a
// real HocuspocusProvider renews its awareness every 15 s), and the lean benchmark clients of
// the idle and rooms scenarios stay silent after their handshake. The reference server's
// equivalent is a WebSocket ping every 30 s, which the clients answer automatically.
import { Server } from "@hocuspocus/server";

const port = Number(process.env.PORT || 1234);
const address = process.env.HOST || "127.0.0.1";

const server = new Server({
  port,
  address,
  quiet: true,
  timeout: 10 * 60 * 1000,
});

await server.listen();
console.log(`hocuspocus listening on ${address}:${port}`);
