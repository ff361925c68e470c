// The monitor protocol from the outside, for tests that forge what a compromised worker could
// send: exo_inject (tests/tools) writes a framed message on the worker's monitor socket.
import { join } from 'node:path';
import { repo } from './agent.mjs';

export const injector = process.env.EXO_INJECT_BIN || join(repo, 'build/exo_inject');

// A message as privsep.h frames it: op, seq, field count, then length-prefixed fields; as
// hex, the way exo_inject takes it.
export function frame(op, seq, fields) {
  const parts = [Buffer.alloc(12)];
  parts[0].writeUInt32LE(op, 0);
  parts[0].writeUInt32LE(seq, 4);
  parts[0].writeUInt32LE(fields.length, 8);
  for (const f of fields) {
    const len = Buffer.alloc(4);
    const b = Buffer.from(f);
    len.writeUInt32LE(b.length, 0);
    parts.push(len, b);
  }
  return Buffer.concat(parts).toString('hex');
}
