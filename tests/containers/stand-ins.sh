# Sourced by scripts/test-containers. No container registry is reachable
# from the test machines, so the base images the Dockerfiles name are built
# locally under the exact same names, once, and kept between runs.

DEBIAN_IMAGE=docker.io/library/debian:bookworm-slim
RUST_IMAGE=docker.io/library/rust:1-bookworm
NGINX_IMAGE=docker.io/library/nginx:stable
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

stand_in_debian() {
  podman image exists "$DEBIAN_IMAGE" && return 0
  echo "building stand-in $DEBIAN_IMAGE (debootstrap, about a minute)"
  local rootfs
  rootfs=$(mktemp -d /var/tmp/spool-debootstrap.XXXXXX)
  debootstrap --variant=minbase bookworm "$rootfs" "$DEBIAN_MIRROR" >"$rootfs.log" 2>&1 \
    || { tail -20 "$rootfs.log"; rm -rf "$rootfs" "$rootfs.log"; return 1; }
  # What the official slim image has: an empty apt cache, apt sources.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import \
    --change 'CMD ["bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - "$DEBIAN_IMAGE" >/dev/null 2>&1
  rm -rf "$rootfs" "$rootfs.log"
}

stand_in_rust() {
  podman image exists "$RUST_IMAGE" && return 0
  echo "building stand-in $RUST_IMAGE (this machine's toolchain, about a minute)"
  local dir sysroot
  dir=$(mktemp -d)
  sysroot=$(rustc --print sysroot)
  # Laid out like the official image: cargo home /usr/local/cargo.
  cat >"$dir/Containerfile" <<'CONTAINERFILE'
FROM docker.io/library/debian:bookworm-slim
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      gcc libc6-dev ca-certificates pkg-config make \
 && rm -rf /var/lib/apt/lists/*
RUN cp -a /toolchain /usr/local/rust && rm -rf /usr/local/rust/share/doc && mkdir -p /usr/local/cargo
ENV CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CONTAINERFILE
  podman build -q --pull=never --layers=false -v "$sysroot":/toolchain:ro -t "$RUST_IMAGE" "$dir" >/dev/null \
    || { rm -rf "$dir"; return 1; }
  rm -rf "$dir"
}

stand_in_nginx() {
  podman image exists "$NGINX_IMAGE" && return 0
  echo "building stand-in $NGINX_IMAGE (Debian's nginx)"
  local dir
  dir=$(mktemp -d)
  cat >"$dir/Containerfile" <<'CONTAINERFILE'
FROM docker.io/library/debian:bookworm-slim
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx \
 && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/default
EXPOSE 80
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
CONTAINERFILE
  podman build -q --pull=never --layers=false --format docker -t "$NGINX_IMAGE" "$dir" >/dev/null \
    || { rm -rf "$dir"; return 1; }
  rm -rf "$dir"
}
