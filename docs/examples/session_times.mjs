#!/usr/bin/env node
// Reads msrs's sessions topic from Node.js through msrs-tail, which prints
// one JSON object a line; --json-ns-strings makes every *_ns field a
// decimal string, turned into a BigInt here: a JavaScript number holds ns
// exactly only up to 2^53 (about 104 days), a time since 1970 needs 61 bits.
//
//   node session_times.mjs LOG_URI        e.g. sqlite:/var/lib/msrs/log.db
//   env MSRS_BIN_DIR: where msrs-tail is (default: on PATH)
//
// Prints, per session that started and stopped: its id, start and stop
// instants (ns since the Unix epoch, master clock), the duration in ns and
// whether the recording is complete.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join } from 'node:path';

const uri = process.argv[2];
if (!uri) {
  console.error('usage: node session_times.mjs LOG_URI');
  process.exit(2);
}
const tail = join(process.env.MSRS_BIN_DIR ?? '', 'msrs-tail');
const child = spawn(tail, ['--log', uri, '--topic', 'sessions', '--json-ns-strings'],
                    { stdio: ['ignore', 'pipe', 'inherit'] });
const sessions = new Map();
for await (const line of createInterface({ input: child.stdout })) {
  const rec = JSON.parse(line);
  const v = rec.value;
  const s = sessions.get(v.session_id) ?? {};
  if (rec.type === 'msrs.events.CollectionStarted') s.start = BigInt(v.start_at_ns);
  if (rec.type === 'msrs.events.CollectionStopped') {
    s.stop = BigInt(v.stop_at_ns);
    s.complete = v.complete;
  }
  sessions.set(v.session_id, s);
}
const code = await new Promise((resolve) => child.on('close', resolve));
if (code !== 0) process.exit(code);
for (const [id, s] of sessions) {
  if (s.start === undefined || s.stop === undefined) continue;
  console.log(JSON.stringify({ session: id, start_ns: String(s.start), stop_ns: String(s.stop),
                               duration_ns: String(s.stop - s.start), complete: s.complete }));
}
