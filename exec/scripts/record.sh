# Sourced by the GPU-machine scripts (after they set $out): record NAME CMD... runs CMD, appends
# its line with the UTC time to $out/commands.txt and keeps its output (also printed) in
# $out/NAME.txt, so every record folder says how each file in it was made.
record() {
  local name=$1; shift
  echo "$(date -u +%FT%TZ) $*" >> "$out/commands.txt"
  "$@" 2>&1 | tee "$out/$name.txt"
}
