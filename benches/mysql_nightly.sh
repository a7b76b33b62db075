#!/usr/bin/env bash
# Nightly-change cost of `cairn mysql backup` per SQL chunk size (issue 4).
# Usage: benches/mysql_nightly.sh SOCKET DB [CAIRN_BINARY]
# Needs a MariaDB server on SOCKET (root, no password) whose database DB has a table `big`
# (id INT PRIMARY KEY, n INT, s VARCHAR(40)) of 1,000,000 rows; a copy `base` is made once.
# For each chunk size: back up, apply one night, back up again, report what the night added.
#   web night: 2% rows appended, 0.5% updated (80% of them among the newest 10%)
#   uniform:   1% of rows updated uniformly
set -euo pipefail
SOCK=$1; DB=$2; CAIRN=${3:-target/release/cairn}
M="mariadb --no-defaults --socket=$SOCK --user=root $DB"
export CAIRN_PASSWORD=bench CAIRN_INSECURE_TEST_KDF=1
$M -e "CREATE TABLE IF NOT EXISTS base LIKE big; INSERT IGNORE INTO base SELECT * FROM big"
reset() { $M -e "DROP TABLE big; CREATE TABLE big LIKE base; INSERT INTO big SELECT * FROM base"; }
web='INSERT INTO big SELECT 1000000 + seq, seq % 1000, CONCAT("new ", seq) FROM seq_1_to_20000;
     UPDATE big SET s = CONCAT("upd ", id), n = n + 1 WHERE (id > 900000 AND id % 25 = 3) OR (id <= 900000 AND id % 900 = 5);'
web_rows='id > 1000000 OR (id > 900000 AND id % 25 = 3) OR (id <= 900000 AND id % 900 = 5)'
uniform='UPDATE big SET s = CONCAT("upd ", id), n = n + 1 WHERE id % 100 = 42;'
uniform_rows='id % 100 = 42'
printf "%-8s %-8s %14s %14s %12s\n" night avg base_stored night_stored rows_sql_zst
for night in web uniform; do
  for avg in 4096 16384 65536; do
    reset
    dir=$(mktemp -d)
    $CAIRN -q -r $dir/repo --cache-dir $dir/cache init
    b1=$($CAIRN -r $dir/repo --cache-dir $dir/cache --json mysql backup --databases $DB --exclude-table $DB.base --socket $SOCK --user root --chunk-avg $avg)
    sql=${night}; $M -e "${!sql}"
    b2=$($CAIRN -r $dir/repo --cache-dir $dir/cache --json mysql backup --databases $DB --exclude-table $DB.base --socket $SOCK --user root --chunk-avg $avg)
    rows=${night}_rows
    zst=$(mariadb-dump --no-defaults --socket=$SOCK --user=root --skip-comments --no-create-info --where="${!rows}" $DB big | zstd -3 -c | wc -c)
    printf "%-8s %-8s %14s %14s %12s\n" $night $avg \
      "$(echo "$b1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["summary"]["stored_bytes_added"])')" \
      "$(echo "$b2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["summary"]["stored_bytes_added"])')" "$zst"
    rm -rf "$dir"
  done
done
