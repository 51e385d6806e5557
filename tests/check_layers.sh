#!/bin/sh
# The include order of the library, checked. KD_LAYERS in CMakeLists.txt lists
# the library's folders in order; a file may include headers from its own folder
# and from folders listed before it, never from one listed after it (cli/,
# tests/ and bench/ sit above every layer and may include any). Inside a folder,
# a file and its header form one unit (kd_loader.c + kd_loader.h; a private
# header kd_dump_impl.h belongs to kd_dump), and the units may not include each
# other in a cycle. Usage: check_layers.sh [repository root].
# docs/architecture.md's table must list the same folders in the same order.
# No library file prints (stdout, stderr, printf, puts, ...) or starts a
# process (fork, exec*, system, popen): only cli/ does; library code speaks
# through kd_log (core/kd_log.c, the one writer of stderr) and the progress
# callbacks of long operations, and core/kd_cpu.c may re-execute the program
# once to pick OpenBLAS's kernels, and data/kd_dump_probe.c forks (never execs) a
# child that opens an untrusted HDF5 file first (docs/testing.md).
# Prints each violation and exits 1 when there is one.
root=${1:-$(dirname "$0")/..}
cd "$root" || exit 2
layers=$(sed -n 's/^set(KD_LAYERS \(.*\))$/\1/p' CMakeLists.txt)
[ -n "$layers" ] || { echo "check_layers: no 'set(KD_LAYERS ...)' line in CMakeLists.txt" >&2; exit 2; }
rank() { i=0; for l in $layers; do [ "$l" = "$1" ] && { echo $i; return; }; i=$((i + 1)); done; echo -1; }

bad=0
for layer in $layers; do
  mine=$(rank "$layer")
  edges=$(mktemp)
  for f in "$layer"/*.c "$layer"/*.h; do
    [ -e "$f" ] || continue
    unit=$(basename "$f"); unit=${unit%.*}; unit=${unit%_impl}
    echo "$unit $unit" >>"$edges"
    for inc in $(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f"); do
      dir=${inc%%/*}
      if [ "$dir" = "$inc" ]; then
        echo "$f: #include \"$inc\" names no folder (write \"$layer/$inc\")"; bad=1; continue
      fi
      theirs=$(rank "$dir")
      if [ "$theirs" -lt 0 ]; then
        echo "$f: #include \"$inc\": $dir/ is not a library layer (KD_LAYERS: $layers)"; bad=1
      elif [ "$theirs" -gt "$mine" ]; then
        echo "$f: #include \"$inc\": $dir/ comes after $layer/ in KD_LAYERS ($layers)"; bad=1
      elif [ "$dir" = "$layer" ]; then
        to=$(basename "$inc"); to=${to%.*}; to=${to%_impl}
        [ "$to" = "$unit" ] || echo "$to $unit" >>"$edges"
      fi
    done
  done
  # tsort orders a dependency graph and names the units of any cycle it finds.
  if ! cycle=$(tsort <"$edges" 2>&1 >/dev/null) || [ -n "$cycle" ]; then
    echo "$layer/: files include each other in a cycle:"
    echo "$cycle" | sed -n 's/^tsort: -: input contains a loop:/  loop:/p; s/^tsort: \(.*\)/    \1/p'
    bad=1
  fi
  rm -f "$edges"
done
# Only cli/ prints or starts processes (comment lines are skipped).
out='\<(stdout|stderr)\>|\<(printf|vprintf|puts|putchar|perror)[[:space:]]*\(|\<write[[:space:]]*\([[:space:]]*[12],'
spawn='\<(fork|vfork|system|popen|posix_spawnp?)[[:space:]]*\(|\<exec[lv]p?e?[[:space:]]*\('
for layer in $layers; do
  for f in "$layer"/*.c "$layer"/*.h; do
    [ -e "$f" ] || continue
    case $f in
      core/kd_log.c) continue ;;
      core/kd_cpu.c) pat="$out|\<(fork|vfork|system|popen|posix_spawnp?)[[:space:]]*\(" ;;
      # reads an untrusted HDF5 file first in a forked child (no exec) with a time limit, so that a
      # crash or hang inside libhdf5 becomes an error (docs/testing.md, "Hostile HDF5 files")
      data/kd_dump_probe.c) pat="$out|\<(vfork|system|popen|posix_spawnp?)[[:space:]]*\(|\<exec[lv]p?e?[[:space:]]*\(" ;;
      *) pat="$out|$spawn" ;;
    esac
    hits=$(grep -nE "$pat" "$f" | grep -vE '^[0-9]+:[[:space:]]*(/?\*|//)')
    if [ -n "$hits" ]; then
      echo "$hits" | sed "s|^|$f:|; s|\$|   <- only cli/ prints or starts processes|"; bad=1
    fi
  done
done
# docs/architecture.md's table of layers lists the same folders in the same order.
documented=$(sed -n 's/^| [0-9][0-9]* | `\([a-z]*\)\/` |.*/\1/p' docs/architecture.md | tr '\n' ' ')
if [ "$documented" != "$layers " ]; then
  echo "docs/architecture.md: the table of layers lists '$documented', expected KD_LAYERS '$layers'"; bad=1
fi
[ "$bad" = 0 ] && echo "check_layers: $(echo $layers | wc -w) layers in order, no cycles, no printing outside cli/"
exit $bad
