#!/bin/sh
# An air gap in two steps. Outside, `out` copies the images a sync YAML names (airgap.yaml) into one
# OCI layout, each blob stored once however many images share it. Carry the directory across (a USB
# disk, `tar`); inside, `in` pushes every image of the layout to a registry, keeping digests.
#
#   configs/sync/airgap.sh out configs/sync/airgap.yaml /media/usb/images                # outside
#   configs/sync/airgap.sh in /media/usb/images registry.internal.example.com/mirror     # inside
#   configs/sync/airgap.sh in /media/usb/images registry.internal.example.com/mirror --dry-run
#
# Arguments after the first three go to `mirror sync` (--dry-run, --authfile FILE, --dest-tls-verify=false,
# --report FILE, ...). Images are named repo:tag in the layout and land at REGISTRY/repo:tag, multi-arch
# images with every platform they have (--all; the YAML's `platforms:` narrows them on the way out). Every
# blob is hashed while it is read back, so a damaged disk fails the image, never publishes it; a run
# stopped half way is simply run again (what already arrived costs a HEAD per image).
set -eu
usage() {
  echo "usage: $0 out SYNC_YAML LAYOUT [mirror sync flags] | in LAYOUT REGISTRY[/NAMESPACE] [mirror sync flags]" >&2
  exit 2
}
[ $# -ge 3 ] || usage
mode=$1 from=$2 to=$3
shift 3
case $mode in
  out) exec mirror sync --src yaml --dest oci --all --keep-going "$@" "$from" "$to" ;;
  in) exec mirror sync --src oci --dest docker --all --keep-going "$@" "$from" "$to" ;;
  *) usage ;;
esac
