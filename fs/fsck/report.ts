// Problem accounting for fsck: every finding is reported once, as fixed (repair mode and
// the fix was applied) or uncorrected. Exit codes follow e2fsck: 0 clean, 1 errors
// corrected, 4 errors left uncorrected, 8 operational error.
export const EXIT_CLEAN = 0;
export const EXIT_CORRECTED = 1;
export const EXIT_UNCORRECTED = 4;
export const EXIT_OPERATIONAL = 8;

export class Report {
  found = 0;
  fixed = 0;
  uncorrected = 0;
  readonly lines: string[] = [];
  private readonly log: (line: string) => void;
  readonly repair: boolean;

  constructor(repair: boolean, log: (line: string) => void) {
    this.repair = repair;
    this.log = log;
  }

  /** A problem that this run fixes when repairing (`fixable`), else leaves. */
  problem(message: string, fixable = true): boolean {
    this.found += 1;
    const willFix = this.repair && fixable;
    if (willFix) this.fixed += 1;
    else this.uncorrected += 1;
    this.say(`${message}${willFix ? ' -- fixed' : fixable ? ' (not fixed: read-only check)' : ' (cannot fix)'}`);
    return willFix;
  }

  info(message: string): void {
    this.say(message);
  }

  private say(line: string): void {
    this.lines.push(line);
    this.log(line);
  }

  get exitCode(): number {
    if (this.uncorrected > 0) return EXIT_UNCORRECTED;
    if (this.fixed > 0) return EXIT_CORRECTED;
    return EXIT_CLEAN;
  }
}
