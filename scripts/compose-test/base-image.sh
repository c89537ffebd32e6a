#!/usr/bin/env bash
# Makes the local base image `et-base:<codename>` (Debian with Python 3 and its venv module),
# standing in for the official python image that no registry here can give: debootstrap from
# the machine's own Debian mirror (read from its apt sources, so no mirror is named here), with
# the host's extra CA certificates added (outgoing https may go through a proxy that re-signs it).
# The root file system is kept as a tarball in the cache and imported when the engine lacks it.
# dpkg runs with unsafe-io (no fsync per file, as in the official Debian images: a build that
# dies is redone anyway), which is most of debootstrap's time on a busy disk.
# Usage: base-image.sh DOCKER_CMD CACHE_DIR  (prints the image name)
set -euo pipefail
docker=$1 cache=$2
. /etc/os-release
codename=${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}
# -2: the unsafe-io base (an older cache's base is made again)
image=et-base:$codename-2
tarball=$cache/base-$codename-2.tar

mirror() {  # the first main-archive URI of the apt sources (deb822 or one-line style)
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v c="$codename" '
      /^URIs:/ {u=$2} /^Suites:/ {for (i=2;i<=NF;i++) if ($i==c) s=1}
      /^$/ {if (u && s) {print u; exit} u=""; s=0}
      END {if (u && s) print u}' "$f"
  done
  { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true; } \
    | awk -v c="$codename" '$1=="deb" && $0 ~ " "c" " {for (i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; break}}'
}

if "$docker" image inspect "$image" >/dev/null 2>&1; then
  echo "$image"
  exit 0
fi
if [ ! -s "$tarball" ]; then
  url=$(mirror | head -n1) || true
  [ -n "$url" ] || { echo "no Debian mirror for $codename in the apt sources" >&2; exit 1; }
  root=$(mktemp -d "$cache/rootfs.XXXXXX")
  # Mounts made inside the root (proc, sys) belong to a mount namespace of their own, gone with
  # it, so none is left under the directory that is removed here.
  trap 'rm -rf --one-file-system "$root"' EXIT
  echo "debootstrap $codename (minbase + python3) ..." >&2
  # In two stages, to set dpkg's options between the unpacking and the installation.
  debootstrap --foreign --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$codename" "$root" "$url" >"$cache/debootstrap.log" 2>&1 \
    || { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
  mkdir -p "$root/etc/dpkg/dpkg.cfg.d" "$root/etc/apt/apt.conf.d"
  echo force-unsafe-io >"$root/etc/dpkg/dpkg.cfg.d/unsafe-io"
  echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/no-languages"
  unshare --mount --propagation private chroot "$root" /debootstrap/debootstrap --second-stage \
    >>"$cache/debootstrap.log" 2>&1 || { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
  # The host's own extra CAs (a re-signing proxy's), so pip and apt over https work inside.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null
  fi
  # pip trusts its own bundle, not the system's: point it at the system's (with the CAs above).
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$root/etc/pip.conf"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
fi
"$docker" import -c 'CMD ["/bin/bash"]' -c 'ENV LANG=C.UTF-8' "$tarball" "$image" >/dev/null
echo "$image"
