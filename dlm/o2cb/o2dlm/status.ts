// Status codes carried in Reply.status (o2dlm's dlm_status, reduced to what this port
// uses), the typed errors DlmDomain throws, and tunables with their defaults.

export const DLM_STATUS = {
  NORMAL: 0,
  /** NOQUEUE request not grantable at once. */
  NOTQUEUED: 1,
  /** CANCEL: the pending request was cancelled; the lock is back where it was. */
  CANCELLED: 2,
  /** CANCEL: nothing to cancel, the request was already granted (AST sent or coming). */
  CANCELGRANT: 3,
  /** The resource (or the domain) is being recovered: retry after recovery. */
  RECOVERING: 4,
  /** The resource is being migrated to another master: retry once it is asserted. */
  MIGRATING: 5,
  /** The receiver does not master this resource: find the master again. */
  NOTMASTER: 6,
  /** No such lock at the master. */
  IVLOCKID: 7,
  /** The payload did not decode or failed validation. */
  BADARGS: 8,
  /** The receiver has no such domain (not joined, or leaving). */
  NOT_IN_DOMAIN: 9,
  /** The handler failed; see Reply.error. */
  ERROR: 10,
  /** Stale recovery message (older generation or another recovery master). */
  STALE: 11,
} as const;
export type DlmStatus = (typeof DLM_STATUS)[keyof typeof DLM_STATUS];

export const MASTER_RESPONSE = { YES: 1, NO: 2, MAYBE: 3 } as const;

export const JOIN = {
  OK: 1,
  OK_NO_MAP: 2,
  DISALLOW: 3,
  PROTOCOL_MISMATCH: 4,
} as const;

/** ASSERT_MASTER flags. */
export const ASSERT_FLAG = { FINISH_MIGRATION: 0x1 } as const;
/** MIG_LOCKRES flags. */
export const MIG_FLAG = { MIGRATION: 0x1, RECOVERY: 0x2 } as const;
/** PROXY_AST kinds. */
export const AST_KIND = { AST: 1, BAST: 2 } as const;
/** LockRecord.queue values (as o2dlm numbers the lists). */
export const QUEUE = { GRANTED: 0, CONVERTING: 1, BLOCKED: 2 } as const;

/** The o2dlm wire protocol this code speaks (o2fs's own, not the kernel's 1.3). */
export const DLM_PROTOCOL = { major: 2, minor: 0 } as const;

/** "No master known yet" (o2dlm's DLM_LOCK_RES_OWNER_UNKNOWN). */
export const OWNER_UNKNOWN = 255;
/** Longest resource name accepted (dlmglue names are 31 characters). */
export const NAME_BYTES_MAX = 64;

export const DEFAULTS = {
  /** Unused resources are purged (and dereferenced at their master) after this long. */
  purgeIntervalMs: 8000,
  /** One mastery round waits this long for an ASSERT_MASTER before starting over. */
  masteryTimeoutMs: 5000,
  /** Recovery master: wait this long for every survivor's RECO_DATA_DONE. */
  recoveryTimeoutMs: 10000,
  /** Bound on any single request to a peer. */
  requestTimeoutMs: 30000,
  /** Back-off between join attempts (plus jitter). */
  joinBackoffMs: 200,
  joinAttemptsMax: 50,
  /** A node that got JOIN_OK must ASSERT_JOINED or CANCEL_JOIN within this long. */
  joiningHoldMs: 10000,
  /** Retries of one lock request (RECOVERING, MIGRATING, NOTMASTER, lost connection). */
  requestAttemptsMax: 400,
  retryDelayMs: 20,
} as const;

export type DlmErrorCode = 'EPROTO' | 'EBUSY' | 'ETIMEDOUT' | 'ENOTCONN' | 'EINVAL';

export class DlmError extends Error {
  constructor(readonly code: DlmErrorCode, message: string) {
    super(`o2dlm: ${code}: ${message}`);
    this.name = 'DlmError';
  }
}

/** Join refused: this node's protocol cannot run with the domain's. */
export class DlmProtocolError extends DlmError {
  constructor(message: string, readonly node: number) {
    super('EPROTO', message);
    this.name = 'DlmProtocolError';
  }
}
