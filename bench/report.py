#!/usr/bin/env python3
"""Turns bench/run.sh's raw results into the printed table and bench/results/latest.json.

    report.py RESULTS_TSV OUT_JSON key=value...   (the key=values are the run's parameters)

RESULTS_TSV has one line per figure: target <TAB> metric <TAB> value (empty = failed or
skipped), a figure measured in several rounds on several lines. Every metric is "higher is
better". The table shows each figure's median over its rounds (every round's value is printed
below it and kept in the JSON); ratios are of medians, o2fs/bindfs and o2fs/plain; the
targets (DESIGN.md section 8) are judged against bindfs, the FUSE ceiling on this disk.
"""
import json
import os
import platform
import sys
import time

METRICS = [
    # metric, label, unit, target ratio to bindfs (or None)
    ('seq_write_MBps', 'sequential write 1 MiB blocks', 'MB/s', 0.8),
    ('seq_read_MBps', 'sequential read (cold cache)', 'MB/s', 0.8),
    ('rand_read_iops', 'random read 4 KiB', 'IOPS', None),
    ('rand_write_iops', 'random write 4 KiB', 'IOPS', None),
    ('create_1dir_ops', 'create, 1 directory', 'ops/s', 0.5),
    ('stat_1dir_ops', 'stat, 1 directory', 'ops/s', 0.5),
    ('unlink_1dir_ops', 'unlink, 1 directory', 'ops/s', 0.5),
    ('create_100dir_ops', 'create, 100 directories', 'ops/s', 0.5),
    ('stat_100dir_ops', 'stat, 100 directories', 'ops/s', 0.5),
    ('unlink_100dir_ops', 'unlink, 100 directories', 'ops/s', 0.5),
    ('dbench_MBps', 'dbench', 'MB/s', None),
]
TARGETS = ['o2fs', 'bindfs', 'plain', 'gluster']


def fmt(v):
    if v is None:
        return '-'
    if v >= 100:
        return f'{v:.0f}'
    return f'{v:.1f}'


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def main() -> int:
    tsv, out_json = sys.argv[1], sys.argv[2]
    params = dict(kv.split('=', 1) for kv in sys.argv[3:])
    samples = {m[0]: {} for m in METRICS}
    with open(tsv) as f:
        for line in f:
            parts = line.rstrip('\n').split('\t')
            if len(parts) != 3:
                continue
            target, metric, value = parts
            if metric in samples:
                samples[metric].setdefault(target, []).append(float(value) if value not in ('', 'null') else None)
    values = {m: {t: median(xs) for t, xs in by.items()} for m, by in samples.items()}
    present = [t for t in TARGETS if any(t in values[m[0]] for m in METRICS)]

    head = ['workload', 'unit'] + present + ['o2fs/bindfs', 'o2fs/plain', 'target']
    rows = []
    results = {}
    for metric, label, unit, target in METRICS:
        v = values[metric]
        rb = ratio(v.get('o2fs'), v.get('bindfs'))
        rp = ratio(v.get('o2fs'), v.get('plain'))
        if target is None:
            verdict = ''
        elif rb is None:
            verdict = f'>= {target}x bindfs: n/a'
        else:
            verdict = f'>= {target}x bindfs: {"met" if rb >= target else "MISSED"}'
        rows.append([label, unit] + [fmt(v.get(t)) for t in present] + [fmt(rb) if rb is None else f'{rb:.2f}', fmt(rp) if rp is None else f'{rp:.2f}', verdict])
        results[metric] = {'label': label, 'unit': unit, 'values': {t: v.get(t) for t in present},
                           'rounds': {t: samples[metric].get(t, []) for t in present},
                           'o2fs_over_bindfs': rb, 'o2fs_over_plain': rp,
                           'target_over_bindfs': target, 'target_met': None if target is None or rb is None else rb >= target}

    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    line = lambda r: '  '.join(str(c).ljust(widths[i]) if i < 2 or i == len(head) - 1 else str(c).rjust(widths[i]) for i, c in enumerate(r))
    print(line(head))
    print('  '.join('-' * w for w in widths))
    for r in rows:
        print(line(r))
    rounds = max((len(xs) for by in samples.values() for xs in by.values()), default=0)
    if rounds > 1:
        print(f'\nevery round ({rounds} rounds, targets in a rotated order each round):')
        for metric, label, _unit, _target in METRICS:
            by = samples[metric]
            if by:
                print(f'  {label}: ' + '; '.join(f'{t} ' + ' '.join(fmt(x) for x in by[t]) for t in present if t in by))

    doc = {
        'date': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
        'host': {'kernel': platform.release(), 'cpus': os.cpu_count(), 'machine': platform.machine()},
        'params': params,
        'targets_present': present,
        'results': results,
    }
    os.makedirs(os.path.dirname(out_json), exist_ok=True)
    with open(out_json, 'w') as f:
        json.dump(doc, f, indent=2)
        f.write('\n')
    if 'gluster' not in present:
        print(f"\nGlusterFS replica-2: {params.get('gluster', 'skipped')}")
    print(f'\nresults written to {out_json}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
