// Lock modes as o2dlm numbers them on the wire (NL 0, PR 3, EX 5; IV -1 = "no mode",
// e.g. a lock still on the blocked queue), and the compatibility matrix (reference §3.1).
import { LockMode } from '../../../stackglue/types';

export const MODE_NL = 0;
export const MODE_PR = 3;
export const MODE_EX = 5;
export const MODE_IV = -1;

/** A wire mode: NL, PR, EX, or IV for "none". */
export type WireMode = typeof MODE_NL | typeof MODE_PR | typeof MODE_EX | typeof MODE_IV;

export function isGrantMode(m: number): m is typeof MODE_NL | typeof MODE_PR | typeof MODE_EX {
  return m === MODE_NL || m === MODE_PR || m === MODE_EX;
}

export function isWireMode(m: number): m is WireMode {
  return m === MODE_IV || isGrantMode(m);
}

export function toWire(m: LockMode): WireMode {
  return m === 'NL' ? MODE_NL : m === 'PR' ? MODE_PR : MODE_EX;
}

export function fromWire(m: number): LockMode {
  if (m === MODE_NL) return 'NL';
  if (m === MODE_PR) return 'PR';
  if (m === MODE_EX) return 'EX';
  throw new Error(`assertion: mode ${m} has no stackglue name`);
}

/** The compatibility matrix; IV (no mode held or wanted) is compatible with everything. */
export function modesCompatible(a: number, b: number): boolean {
  if (a === MODE_IV || b === MODE_IV || a === MODE_NL || b === MODE_NL) return true;
  return a === MODE_PR && b === MODE_PR;
}

export function modeName(m: number): string {
  return m === MODE_IV ? 'IV' : isGrantMode(m) ? fromWire(m) : `?${m}`;
}
