/* A small SQLite program for orcjit's tests: builds an in-memory database of N pseudo-random
 * rows (a fixed-seed generator, so the output depends only on N), then prints the results of
 * aggregates, a GROUP BY, an index lookup, a join, an UPDATE and a DELETE. Usage: driver [N] */
#include <stdio.h>
#include <stdlib.h>

#include "sqlite3.h"

static sqlite3 *db;

static void check(int rc, const char *what) {
  if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW) {
    fprintf(stderr, "driver: %s: %s\n", what, sqlite3_errmsg(db));
    exit(1);
  }
}

static void run(const char *sql) {
  char *error = NULL;
  if (sqlite3_exec(db, sql, NULL, NULL, &error) != SQLITE_OK) {
    fprintf(stderr, "driver: %s: %s\n", sql, error);
    exit(1);
  }
}

/* Prints every row of `sql`, its columns separated by '|'. */
static void show(const char *sql) {
  sqlite3_stmt *stmt;
  check(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), sql);
  printf("%s\n", sql);
  int rc;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    for (int i = 0; i < sqlite3_column_count(stmt); i++) {
      const unsigned char *text = sqlite3_column_text(stmt, i);
      printf("%s%s", i ? "|" : "  ", text ? (const char *)text : "NULL");
    }
    printf("\n");
  }
  check(rc, sql);
  sqlite3_finalize(stmt);
}

int main(int argc, char **argv) {
  int rows = argc > 1 ? atoi(argv[1]) : 2000;
  check(sqlite3_open(":memory:", &db), "open");
  run("CREATE TABLE item(id INTEGER PRIMARY KEY, kind INTEGER, price REAL, name TEXT)");
  run("CREATE TABLE kind(id INTEGER PRIMARY KEY, label TEXT)");
  run("INSERT INTO kind VALUES (0,'bolt'),(1,'nut'),(2,'gear'),(3,'spring'),(4,'cam')");
  sqlite3_stmt *insert;
  check(sqlite3_prepare_v2(db, "INSERT INTO item(kind, price, name) VALUES (?, ?, ?)", -1, &insert, NULL), "prepare");
  run("BEGIN");
  unsigned seed = 12345;
  char name[32];
  for (int i = 0; i < rows; i++) {
    seed = seed * 1103515245u + 12345u;
    unsigned r = seed >> 8;
    snprintf(name, sizeof name, "part-%u", r % 997);
    sqlite3_bind_int(insert, 1, (int)(r % 5));
    sqlite3_bind_double(insert, 2, (double)(r % 10000) / 100.0);
    sqlite3_bind_text(insert, 3, name, -1, SQLITE_TRANSIENT);
    check(sqlite3_step(insert), "insert");
    sqlite3_reset(insert);
  }
  run("COMMIT");
  sqlite3_finalize(insert);
  show("SELECT count(*), round(sum(price), 2), round(avg(price), 4), min(price), max(price) FROM item");
  show("SELECT kind, count(*), round(sum(price), 2) FROM item GROUP BY kind ORDER BY kind");
  run("CREATE INDEX item_name ON item(name)");
  show("SELECT count(*), round(sum(price), 2) FROM item WHERE name = 'part-42'");
  show("SELECT k.label, count(*) FROM item i JOIN kind k ON k.id = i.kind WHERE i.price > 50 "
       "GROUP BY k.label ORDER BY k.label");
  run("UPDATE item SET price = price * 2 WHERE kind = 3");
  run("DELETE FROM item WHERE price < 10");
  show("SELECT count(*), round(sum(price), 2) FROM item");
  show("SELECT name, round(price, 2) FROM item ORDER BY price DESC, id LIMIT 5");
  sqlite3_close(db);
  return 0;
}
