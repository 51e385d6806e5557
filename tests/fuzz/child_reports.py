#!/usr/bin/env python3
# tests/fuzz/child_reports.py LOG... — sanitizer reports in fuzz logs (tools/fuzz.sh campaign).
# HDF5 files are read first in a child process (data/kd_dump_probe.c); a sanitizer
# report there does not stop libFuzzer, so the logs are searched: every report
# whose first frame outside the sanitizer runtime is not inside libhdf5 would be
# a bug of kd that the probe hid, and is printed.
import re, sys
total_bad = 0
for path in sys.argv[1:]:
    lines = open(path, errors='replace').read().split('\n')
    n = bad = 0
    i = 0
    while i < len(lines):
        if re.search(r'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:', lines[i]):
            n += 1
            head = lines[i]
            frame = None
            for l in lines[i+1:i+40]:
                m = re.match(r'\s+#\d+ 0x[0-9a-f]+ in (\S+)( \((\S+))?', l) or re.match(r'\s+#\d+ 0x[0-9a-f]+ +\((\S+)', l)
                if not m: continue
                s = l
                if 'interceptor' in s or 'malloc' in s.split(' in ')[-1][:8] or 'libclang_rt' in s: continue
                if re.search(r' in (__asan|__sanitizer|__lsan|malloc|calloc|realloc|free|strlen|memcpy|memmove|memset)\b', s): continue
                frame = s.strip(); break
            if frame is None or 'libhdf5' not in frame:
                bad += 1
                print(path, '|', head.strip()[:120], '|', frame)
        i += 1
    print(f'{path}: {n} sanitizer reports, {bad} not inside libhdf5', file=sys.stderr)
    total_bad += bad
sys.exit(1 if total_bad else 0)
