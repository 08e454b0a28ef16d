#!/usr/bin/env bash
# Builds the thresig node image FROM scratch around a binary built here.
#
#   deploy/docker/build.sh                     cargo build --release, image thresig:<version>
#   deploy/docker/build.sh --binary PATH       wrap an existing binary (e.g. target/debug/thresig)
#   deploy/docker/build.sh --tag NAME          image name (default thresig:<version> and thresig:latest)
#
# A glibc binary gets the shared libraries it links (ldd) copied in beside it;
# a static (musl) binary needs none. Prints the image's size.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
binary="" tag=""
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if ! docker info >/dev/null 2>&1; then
  echo "build.sh: no Docker engine answers (docker info failed)" >&2
  exit 1
fi
if [ -z "$binary" ]; then
  echo "== cargo build --release" >&2
  (cd "$repo" && cargo build --release --quiet)
  binary="$repo/target/release/thresig"
fi
[ -x "$binary" ] || { echo "build.sh: $binary is not an executable" >&2; exit 1; }
version="$("$binary" --version | awk '{print $2}')"
tag="${tag:-thresig:$version}"

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
root="$ctx/rootfs"
mkdir -p "$root/usr/local/bin" "$root/etc/thresig" "$root/tmp" "$ctx/data"
cp "$binary" "$root/usr/local/bin/thresig"
# Debug info is of no use in the image (and would be most of its size).
if command -v strip >/dev/null 2>&1; then strip --strip-debug "$root/usr/local/bin/thresig"; fi
# The shared libraries a glibc build links, at the paths the loader expects.
if ldd "$binary" >/dev/null 2>&1; then
  ldd "$binary" | awk '/=>/ {print $3} !/=>/ && $1 ~ /^\// {print $1}' | while read -r lib; do
    [ -n "$lib" ] && [ -e "$lib" ] || continue
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
fi
chmod 0700 "$ctx/data"
chmod 1777 "$root/tmp"
cp "$here/Dockerfile" "$ctx/Dockerfile"
echo "== docker build -t $tag" >&2
docker build --quiet -t "$tag" "$ctx" >/dev/null
if [ "$tag" = "thresig:$version" ]; then docker tag "$tag" thresig:latest; fi
size="$(docker image inspect "$tag" --format '{{.Size}}')"
echo "image $tag: $((size / 1024 / 1024)) MiB ($size bytes)"
