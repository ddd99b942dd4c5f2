#!/usr/bin/env bash
# Installs a published MoECluster (deploy/publish.sh OUT_DIR) on a GPU host: the program under PREFIX, the
# systemd units moecluster-frontend.service and moecluster-expert@.service (one instance per GPU), and the
# environment files /etc/moecluster/{common,frontend,expert,expert-N}.env. Starts nothing unless --start says so.
# Running it again is safe: identical files are left alone, and existing environment files are never
# overwritten (your edits survive); a changed program or unit is replaced.
#
#   deploy/install.sh [options] PUBLISH_DIR
#   deploy/install.sh --uninstall [--purge] [--prefix DIR] [--root DIR]
#
# --prefix DIR        program directory (default /opt/moecluster)
# --root DIR          install below DIR (DESTDIR-style staging, e.g. an image root or a test directory):
#                     files go to DIR/PREFIX, the units still refer to PREFIX; no user, no systemctl
# --user NAME         service account the units run as (default moecluster)
# --no-user           do not create the service account (create it yourself before starting the units)
# --gpus N            expert instances to configure: writes expert-0.env .. expert-(N-1).env
#                     (default: the GPUs nvidia-smi lists, else 1)
# --redis HOST:PORT   Redis for cluster membership, written into a new common.env (default: a placeholder)
# --advertise-ip IP   this host's address for the other silos, written into a new common.env
#                     (default: the first address of hostname -I)
# --tls-dir DIR       the cluster's TLS material for this host: DIR/ca.crt, DIR/tls.crt, DIR/tls.key (from
#                     `moecluster tls init` or `tls issue`), copied to /etc/moecluster/tls. Without it, a host
#                     that has none gets a new CA and certificate (moecluster tls init): fine for the first
#                     host; give the others certificates from the same CA (deploy/README.md)
# --start WHAT        after installing, enable and start: frontend, experts or all
# --uninstall         stop and remove the units and the program; keeps /etc/moecluster and /var/lib/moecluster
# --purge             with --uninstall: also remove /etc/moecluster (models in /var/lib/moecluster stay)
# -h, --help          this text
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
prefix="/opt/moecluster"
root=""
user="moecluster"
create_user=1
gpus=""
redis=""
advertise_ip=""
start=""
tls_from=""
action="install"
purge=0
publish_dir=""

confdir="/etc/moecluster"
statedir="/var/lib/moecluster"
modeldir="$statedir/models"
unitdir="/etc/systemd/system"
marker=".moecluster-install"
units=(moecluster-frontend.service moecluster-expert@.service)

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
}

die() {
  echo "install.sh: error: $*" >&2
  exit 2
}

need_value() {
  [ "$2" -ge 2 ] || die "$1 needs a value"
}

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) need_value "$1" $#; prefix="$2"; shift 2 ;;
    --root) need_value "$1" $#; root="$2"; shift 2 ;;
    --user) need_value "$1" $#; user="$2"; shift 2 ;;
    --no-user) create_user=0; shift ;;
    --gpus) need_value "$1" $#; gpus="$2"; shift 2 ;;
    --redis) need_value "$1" $#; redis="$2"; shift 2 ;;
    --advertise-ip) need_value "$1" $#; advertise_ip="$2"; shift 2 ;;
    --start) need_value "$1" $#; start="$2"; shift 2 ;;
    --tls-dir) need_value "$1" $#; tls_from="$2"; shift 2 ;;
    --uninstall) action="uninstall"; shift ;;
    --purge) purge=1; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *)
      [ -z "$publish_dir" ] || die "one PUBLISH_DIR only (got $publish_dir and $1)"
      publish_dir="$1"
      shift
      ;;
  esac
done

# Paths end up in unit files and sed replacements: keep them plain.
case "$prefix" in
  / | /usr | /usr/local | /opt | /etc | /var | /var/lib | /bin | /sbin | /lib | /home | /root | /tmp)
    die "--prefix $prefix is a system directory; use a directory of its own such as /opt/moecluster" ;;
esac
[[ "$prefix" =~ ^(/[A-Za-z0-9._-]+)+$ ]] || die "--prefix must be an absolute path of letters, digits, '.', '_', '-' (got '$prefix')"
[[ "$user" =~ ^[a-z_][a-z0-9_-]*$ ]] || die "--user '$user' is not a valid account name"
if [ -n "$root" ]; then
  [[ "$root" = /* ]] || root="$(pwd)/$root"
  root="${root%/}"
  [ "$root" != "" ] || die "--root / is the default; leave it out"
fi
if [ -n "$gpus" ] && ! [[ "$gpus" =~ ^[1-9][0-9]?$ ]]; then
  die "--gpus must be a number from 1 to 99 (got '$gpus')"
fi
if [ -n "$advertise_ip" ] && ! [[ "$advertise_ip" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$|^[0-9A-Fa-f:]+$ ]]; then
  die "--advertise-ip must be an IP address (got '$advertise_ip')"
fi
if [ -n "$redis" ] && ! [[ "$redis" =~ ^[A-Za-z0-9._:,=-]+$ ]]; then
  die "--redis must look like HOST:PORT[,option=value...] (got '$redis')"
fi
case "$start" in
  "" | frontend | experts | all) ;;
  *) die "--start takes frontend, experts or all (got '$start')" ;;
esac
[ -z "$root" ] || [ -z "$start" ] || die "--start cannot be combined with --root (nothing runs from a staging root)"
[ "$purge" = 0 ] || [ "$action" = "uninstall" ] || die "--purge goes with --uninstall"
if [ -n "$tls_from" ]; then
  for f in ca.crt tls.crt tls.key; do
    [ -f "$tls_from/$f" ] || die "--tls-dir $tls_from has no $f (moecluster tls init --dir DIR, or tls issue, writes ca.crt, tls.crt, tls.key)"
  done
fi

# With --root nothing touches the running system: no account, no systemctl.
live=0
if [ -z "$root" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  live=1
fi
[ -z "$start" ] || [ "$live" = 1 ] || die "--start needs a running systemd (systemctl)"
is_root=0
[ "$(id -u)" != 0 ] || is_root=1

say() {
  printf '%-10s %s\n' "$1" "$2"
}

# install_file SRC DEST MODE: copies SRC to DEST (under the root) unless DEST already has that content and mode.
install_file() {
  local src="$1" dest="$root$2" mode="$3"
  if [ -f "$dest" ] && cmp -s "$src" "$dest" && [ "$(stat -c %a "$dest")" = "${mode#0}" ]; then
    say unchanged "$2"
    return 1
  fi
  install -D -m "$mode" "$src" "$dest"
  say installed "$2"
}

# render TEMPLATE OUT KEY=VALUE...: replaces @KEY@ with VALUE.
render() {
  local template="$1" out="$2"
  shift 2
  local args=(-e '') pair
  for pair in "$@"; do
    args+=(-e "s|@${pair%%=*}@|${pair#*=}|g")
  done
  sed "${args[@]}" "$template" >"$out"
  if grep -q '@[A-Z_]*@' "$out"; then
    die "internal: unreplaced placeholder in $out: $(grep -o '@[A-Z_]*@' "$out" | head -1)"
  fi
}

# The tree under DIR as "path mode sha256" lines, to tell whether two installs are the same.
tree_listing() {
  (cd "$1" && find . -mindepth 1 -printf '%P %y %m\n' | sort && find . -type f -print0 | sort -z | xargs -0 -r sha256sum)
}

ensure_dir() {
  local dir="$root$1" mode="$2" owner="$3"
  if [ -d "$dir" ]; then
    say unchanged "$1/"
  else
    install -d -m "$mode" "$dir"
    say created "$1/"
  fi
  if [ "$is_root" = 1 ]; then
    chown "$owner" "$dir"
  fi
}

systemctl_live() {
  if [ "$live" = 1 ]; then
    systemctl "$@"
  fi
}

uninstall() {
  local dest="$root$prefix" unit link
  if [ "$live" = 1 ]; then
    systemctl stop 'moecluster-expert@*.service' moecluster-frontend.service 2>/dev/null || true
    for link in "$unitdir"/*.wants/moecluster-frontend.service "$unitdir"/*.wants/moecluster-expert@*.service; do
      [ -e "$link" ] || [ -L "$link" ] || continue
      systemctl disable "$(basename "$link")" >/dev/null 2>&1 || true
    done
  fi
  for link in "$root$unitdir"/*.wants/moecluster-frontend.service "$root$unitdir"/*.wants/moecluster-expert@*.service; do
    if [ -L "$link" ]; then
      rm -f "$link"
      say removed "${link#"$root"}"
    fi
  done
  for unit in "${units[@]}"; do
    if [ -f "$root$unitdir/$unit" ]; then
      rm -f "$root$unitdir/$unit"
      say removed "$unitdir/$unit"
    fi
  done
  systemctl_live daemon-reload
  if [ -d "$dest" ]; then
    [ -f "$dest/$marker" ] || die "refusing to remove $dest: it has no $marker, so install.sh did not install it"
    rm -rf "$dest"
    say removed "$prefix/"
  fi
  if [ "$purge" = 1 ]; then
    if [ -d "$root$confdir" ]; then
      rm -rf "$root$confdir"
      say removed "$confdir/"
    fi
  elif [ -d "$root$confdir" ]; then
    say kept "$confdir/ (your settings; --purge removes them)"
  fi
  [ ! -d "$root$statedir" ] || say kept "$statedir/ (state and models; remove it yourself)"
  if [ "$create_user" = 1 ] && [ -z "$root" ] && getent passwd "$user" >/dev/null 2>&1; then
    say kept "account $user (userdel $user removes it)"
  fi
}

if [ "$action" = "uninstall" ]; then
  [ -z "$publish_dir" ] || die "--uninstall takes no PUBLISH_DIR"
  uninstall
  exit 0
fi

[ -n "$publish_dir" ] || { usage >&2; exit 2; }
[ -d "$publish_dir" ] || die "$publish_dir is not a directory (make one with deploy/publish.sh)"
publish_dir="$(cd "$publish_dir" && pwd)"
if [ ! -f "$publish_dir/moecluster" ] || [ ! -x "$publish_dir/moecluster" ]; then
  die "$publish_dir has no executable moecluster: is it the output of deploy/publish.sh?"
fi
[ -n "$root" ] || [ "$is_root" = 1 ] || die "installing into the system needs root (or use --root DIR to stage)"
[ -z "$root" ] || mkdir -p "$root"

if [ -z "$gpus" ]; then
  gpus=1
  if command -v nvidia-smi >/dev/null 2>&1; then
    found=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
    if [ "$found" -gt 0 ]; then
      gpus="$found"
    fi
  fi
fi
if [ -z "$advertise_ip" ]; then
  advertise_ip=$(hostname -I 2>/dev/null | awk '{print $1}' || true)
  [ -n "$advertise_ip" ] || advertise_ip="REPLACE-WITH-THIS-HOST-IP"
fi
[ -n "$redis" ] || redis="REPLACE-WITH-REDIS-HOST:6379"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# 1. The service account (its home is the state directory; it cannot log in).
owner="root:root"
if [ "$create_user" = 1 ] && [ -z "$root" ]; then
  if getent passwd "$user" >/dev/null 2>&1; then
    say unchanged "account $user"
  else
    useradd --system --user-group --home-dir "$statedir" --no-create-home --shell /usr/sbin/nologin "$user"
    say created "account $user"
  fi
  owner="$user:$user"
elif getent passwd "$user" >/dev/null 2>&1 && [ -z "$root" ]; then
  owner="$user:$user"
fi

# 2. The program: staged beside PREFIX, swapped in only when it differs from what is there.
dest="$root$prefix"
if [ -e "$dest" ] && [ ! -f "$dest/$marker" ] && [ -n "$(ls -A "$dest" 2>/dev/null)" ]; then
  die "refusing to replace $dest: it is not empty and has no $marker (not installed by install.sh)"
fi
stage="$dest.new.$$"
mkdir -p "$(dirname "$dest")"
rm -rf "$stage"
cp -R "$publish_dir" "$stage"
printf 'MoECluster, installed by deploy/install.sh; deploy/install.sh --uninstall removes it.\n' >"$stage/$marker"
chmod -R u+rwX,go+rX,go-w "$stage"
chmod 0755 "$stage" "$stage/moecluster"
if [ -d "$dest" ] && [ "$(tree_listing "$stage")" = "$(tree_listing "$dest")" ]; then
  rm -rf "$stage"
  say unchanged "$prefix/ ($(find "$dest" -type f | wc -l) files)"
else
  [ "$is_root" = 0 ] || chown -R root:root "$stage"
  rm -rf "$dest.old.$$"
  [ ! -d "$dest" ] || mv "$dest" "$dest.old.$$"
  mv "$stage" "$dest"
  rm -rf "$dest.old.$$"
  say installed "$prefix/ ($(find "$dest" -type f | wc -l) files)"
fi

# 3. State and model directories (models: root-owned, read-only to the services).
ensure_dir "$statedir" 0750 "$owner"
ensure_dir "$modeldir" 0755 root:root

# 4. Units.
units_changed=0
for unit in "${units[@]}"; do
  render "$here/systemd/$unit" "$work/$unit" PREFIX="$prefix" CONFDIR="$confdir" STATEDIR="$statedir" MODELDIR="$modeldir" USER="$user"
  if install_file "$work/$unit" "$unitdir/$unit" 0644; then
    units_changed=1
  fi
done

# 5. Environment files: written when missing, never overwritten.
install -d -m 0755 "$root$confdir"
env_file() {
  local template="$1" name="$2"
  shift 2
  if [ -f "$root$confdir/$name" ]; then
    say kept "$confdir/$name (exists; not overwritten)"
    return
  fi
  render "$template" "$work/$name" "$@"
  install -m 0640 "$work/$name" "$root$confdir/$name"
  [ "$is_root" = 0 ] || chown root:root "$root$confdir/$name"
  say installed "$confdir/$name"
}
env_file "$here/systemd/env/common.env" common.env REDIS="$redis" ADVERTISE_IP="$advertise_ip" MODELDIR="$modeldir" CONFDIR="$confdir"
env_file "$here/systemd/env/frontend.env" frontend.env CONFDIR="$confdir" EXPECTED_EXPERTS="$gpus"
env_file "$here/systemd/env/expert.env" expert.env
for ((i = 0; i < gpus; i++)); do
  env_file "$here/systemd/env/expert-instance.env" "expert-$i.env" INSTANCE="$i" SILO_PORT="$((11112 + i))" HTTP_PORT="$((8081 + i))"
done

# 6. Secrets the services read: the cluster's TLS material and the gateway's API keys. Readable by root and the
#    service account's group; the CA key (when tls init made one here) by root only.
group="${owner#*:}"
tlsdir="$confdir/tls"
secret_owner() {
  [ "$is_root" = 0 ] || chown "root:$group" "$root$1"
}
if [ -n "$tls_from" ]; then
  install -d -m 0750 "$root$tlsdir"
  secret_owner "$tlsdir"
  install_file "$tls_from/ca.crt" "$tlsdir/ca.crt" 0644 || true
  install_file "$tls_from/tls.crt" "$tlsdir/tls.crt" 0644 || true
  install_file "$tls_from/tls.key" "$tlsdir/tls.key" 0640 || true
  secret_owner "$tlsdir/tls.key"
elif [ -f "$root$tlsdir/tls.crt" ]; then
  say kept "$tlsdir/ (the cluster's certificates; --tls-dir DIR replaces them)"
else
  install -d -m 0750 "$root$tlsdir"
  secret_owner "$tlsdir"
  "$dest/moecluster" tls init --dir "$root$tlsdir" >/dev/null || die "moecluster tls init --dir $root$tlsdir failed"
  chmod 0640 "$root$tlsdir/tls.key"
  secret_owner "$tlsdir/tls.key"
  say created "$tlsdir/ (a new cluster CA: other hosts need certificates from it, see deploy/README.md)"
fi
keys="$confdir/gateway-keys"
if [ -f "$root$keys" ]; then
  say kept "$keys (exists; not overwritten)"
else
  (umask 077 && { echo "# MoECluster gateway API keys: one per line; clients send Authorization: Bearer KEY."; od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; echo; } >"$work/gateway-keys")
  install -m 0640 "$work/gateway-keys" "$root$keys"
  secret_owner "$keys"
  say created "$keys (one new API key; the gateway needs one on every request)"
fi

# 7. systemd: reload changed units; start only what was asked for.
if [ "$units_changed" = 1 ]; then
  systemctl_live daemon-reload
fi
case "$start" in
  frontend | all)
    systemctl enable --now moecluster-frontend.service
    say started moecluster-frontend.service
    ;;&
  experts | all)
    for ((i = 0; i < gpus; i++)); do
      systemctl enable --now "moecluster-expert@$i.service"
      say started "moecluster-expert@$i.service"
    done
    ;;
esac
if [ -z "$start" ]; then
  echo "nothing started. Edit $confdir/common.env (Redis, advertised address, models), then:"
  echo "  systemctl enable --now moecluster-frontend.service                # on the front-end host"
  echo "  systemctl enable --now moecluster-expert@{0..$((gpus - 1))}.service   # one per GPU"
fi
