# Sourced by scripts/upstream_host.sh and scripts/fork2026_host.sh: one rule for "is this host's venv current".
# host_stamp_wanted NAME TARBALL STAMP HINT INPUT...  prints the hash of the archive and the input files; with
# the archive gone but a stamp there, the stamp's hash (keep what was installed); with neither, fails saying
# "NAME: TARBALL is missing. HINT" (what to do). The caller rebuilds when the stamp holds another hash.
host_stamp_wanted() {
  local name="$1" tarball="$2" stamp="$3" hint="$4"
  shift 4
  if [[ -f "$tarball" ]]; then
    (sha256sum "$tarball" | cut -d' ' -f1; cat "$@") | sha256sum | cut -d' ' -f1
  elif [[ -f "$stamp" ]]; then
    cat "$stamp"
  else
    echo "$name: $tarball is missing. $hint" >&2
    return 1
  fi
}
