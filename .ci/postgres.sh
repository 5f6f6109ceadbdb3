#!/usr/bin/env bash
# Start a PostgreSQL server on 127.0.0.1 for the PostgreSQL-backed tuning test and print
# its URL on stdout (everything else goes to stderr):
#
#   export SKCGCNN_TEST_POSTGRES_URL="$(.ci/postgres.sh)"
#
# Installs Debian's postgresql package when it is missing (needs root or sudo, and apt),
# starts the newest cluster, and creates a role and a database (skcgcnn/skcgcnn/skcgcnn
# unless SKCGCNN_PG_USER, SKCGCNN_PG_PASSWORD, SKCGCNN_PG_DB say otherwise).  Running it
# again is harmless.  The Python side needs a driver: pip install psycopg2-binary.
set -euo pipefail

PG_USER=${SKCGCNN_PG_USER:-skcgcnn}
PG_PASSWORD=${SKCGCNN_PG_PASSWORD:-skcgcnn}
PG_DB=${SKCGCNN_PG_DB:-skcgcnn}

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
    AS_POSTGRES="runuser -u postgres --"
else
    SUDO="sudo"
    AS_POSTGRES="sudo -u postgres"
fi

if ! command -v pg_lsclusters >/dev/null 2>&1; then
    echo "installing postgresql" >&2
    $SUDO apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >&2
fi

VERSION=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
if [ -z "$VERSION" ]; then
    echo "no PostgreSQL cluster in /etc/postgresql; create one with pg_createcluster" >&2
    exit 1
fi
if ! pg_lsclusters -h | awk -v v="$VERSION" '$1 == v && $2 == "main"' | grep -q .; then
    $SUDO pg_createcluster "$VERSION" main >&2
fi
if ! pg_lsclusters -h | awk -v v="$VERSION" '$1 == v && $2 == "main" && $4 == "online"' \
        | grep -q .; then
    echo "starting PostgreSQL $VERSION" >&2
    $SUDO pg_ctlcluster "$VERSION" main start >&2
fi
PORT=$(pg_lsclusters -h | awk -v v="$VERSION" '$1 == v && $2 == "main" {print $3}')

# wait until it accepts connections
for _ in $(seq 1 30); do
    if $AS_POSTGRES psql -q -p "$PORT" -c "select 1" >/dev/null 2>&1; then
        break
    fi
    sleep 1
done

$AS_POSTGRES psql -q -v ON_ERROR_STOP=1 -p "$PORT" >&2 <<SQL
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN
        CREATE ROLE "$PG_USER" LOGIN PASSWORD '$PG_PASSWORD';
    END IF;
END
\$\$;
SQL
if ! $AS_POSTGRES psql -tA -p "$PORT" -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'" \
        | grep -q 1; then
    $AS_POSTGRES createdb -p "$PORT" -O "$PG_USER" "$PG_DB" >&2
fi

# Debian's default pg_hba.conf allows password logins over TCP from 127.0.0.1
echo "postgresql://$PG_USER:$PG_PASSWORD@127.0.0.1:$PORT/$PG_DB"
