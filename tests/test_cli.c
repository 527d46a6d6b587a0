/*
 * test_cli.c: the cohort-participant commands (participant/cli*.c), run
 * through cli_main against a fake token (tests/pt_fake.h), with what they
 * print captured. It checks what the owner sees: the exact output of each
 * command, the exit status of every kind of failure, that every number
 * and key on the command line is checked, and that text from strangers
 * (a researcher's study name) cannot put control sequences on the owner's
 * terminal. tests/e2e_participant.sh runs the real binary on a real token.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "participant/cli.h"
#include "tests/pt_fake.h"

#define NOW 1785000000 /* 2026-07-25T17:20:00Z */

struct world {
    struct fake_token *f;
    int open_rc;
    const char *open_msg;
    int opens;
    bool created;
    char *out_buf, *err_buf;
    size_t out_len, err_len;
    FILE *out, *err;
    struct cli_env env;
    char dir[64];
    char token[128]; /* the --token value the last open was given; "" for none */
};

static int w_open(void *ctx, const char *token, const char *dir, bool create, struct pt_link *link,
                  void **handle, char *msg, size_t msg_len)
{
    struct world *w = ctx;
    (void)dir;
    snprintf(w->token, sizeof w->token, "%s", token ? token : "");
    w->opens++;
    if (w->open_rc != 0) {
        snprintf(msg, msg_len, "%s", w->open_msg ? w->open_msg : "");
        return w->open_rc;
    }
    w->created |= create;
    *link = fake_link(w->f);
    *handle = w;
    return 0;
}

static void w_close(void *ctx, void *handle)
{
    assert_ptr_equal(ctx, handle);
}

static int setup(void **state)
{
    struct world *w = calloc(1, sizeof *w);
    assert_non_null(w);
    w->f = fake_new();
    snprintf(w->dir, sizeof w->dir, "/tmp/test_cli.XXXXXX");
    assert_non_null(mkdtemp(w->dir));
    *state = w;
    return 0;
}

static int teardown(void **state)
{
    struct world *w = *state;
    char path[128];
    snprintf(path, sizeof path, "%s/" CLI_CSR_FILE, w->dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/in.csv", w->dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/in.jsonl", w->dir);
    unlink(path);
    rmdir(w->dir);
    fake_free(w->f);
    free(w->out_buf);
    free(w->err_buf);
    free(w);
    return 0;
}

/* Run one command line (a string split on spaces, with '~' for a space
 * inside an argument and '@' for the test's directory). */
static int run(struct world *w, const char *line)
{
    char *copy = strdup(line), *argv[64], *save = NULL;
    char args[64][512];
    int argc = 0, rc;

    assert_non_null(copy);
    argv[argc++] = "cohort-participant";
    for (char *t = strtok_r(copy, " ", &save); t != NULL; t = strtok_r(NULL, " ", &save)) {
        size_t k = 0;
        for (const char *p = t; *p && k + 64 < sizeof args[0]; p++) {
            if (*p == '@') {
                k += (size_t)snprintf(args[argc] + k, sizeof args[0] - k, "%s", w->dir);
            } else {
                args[argc][k++] = *p == '~' ? ' ' : *p;
            }
        }
        args[argc][k] = '\0';
        argv[argc] = args[argc];
        argc++;
    }
    free(copy);
    free(w->out_buf);
    free(w->err_buf);
    w->out_buf = w->err_buf = NULL;
    w->out = open_memstream(&w->out_buf, &w->out_len);
    w->err = open_memstream(&w->err_buf, &w->err_len);
    assert_non_null(w->out);
    assert_non_null(w->err);
    w->env = (struct cli_env){w->out, w->err, NOW, w_open, w_close, w, NULL, NULL};
    rc = cli_main(argc, argv, &w->env);
    fclose(w->out);
    fclose(w->err);
    return rc;
}

static void write_file(struct world *w, const char *name, const char *text)
{
    char path[128];
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", w->dir, name);
    f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void expect_err_has(struct world *w, const char *part)
{
    if (strstr(w->err_buf, part) == NULL)
        fail_msg("stderr lacks '%s':\n%s", part, w->err_buf);
}

static void expect_out(struct world *w, const char *want)
{
    if (strcmp(w->out_buf, want) != 0)
        fail_msg("stdout:\n%s\nexpected:\n%s", w->out_buf, want);
}

#define HEALTH_CSV                                                                                 \
    "participant,age,sex,region,date,steps,heart_rate,weight,age_band\n"                           \
    "1,42,F,R012,2026-03-01,8412,71,64.5,40-49\n"                                                  \
    "1,42,F,R012,2026-03-02,10230,68,64.3,40-49\n"                                                 \
    "1,42,F,R012,2026-03-03,,74,,40-49\n"

/* ------------------------------------------------------------- help */

static void every_command_has_help_and_the_program_lists_them(void **state)
{
    static const char *const cmds[] = {"init",   "provision", "import", "tables",  "rows",
                                       "delete", "policy",    "audit",  "compact", "run"};
    struct world *w = *state;

    assert_int_equal(run(w, "--help"), CLI_OK);
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        assert_non_null(strstr(w->out_buf, cmds[i]));
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        char line[64], usage[64];
        snprintf(line, sizeof line, "%s --help", cmds[i]);
        assert_int_equal(run(w, line), CLI_OK);
        snprintf(usage, sizeof usage, "usage: cohort-participant %s", cmds[i]);
        assert_non_null(strstr(w->out_buf, usage));
        assert_string_equal(w->err_buf, "");
    }
    assert_int_equal(w->opens, 0);
    assert_int_equal(run(w, ""), CLI_USAGE);
    assert_int_equal(run(w, "frobnicate"), CLI_USAGE);
    expect_err_has(w, "unknown command 'frobnicate'");
}

/* ------------------------------------------------------------- usage */

struct parsed {
    const char *dir, *out, *file;
    bool json;
};

static void args_help(FILE *out)
{
    fputs("the help\n", out);
}

/* cli_args over line (split on spaces) with --dir, --out, --json and an
 * operand ("-" allowed when dash); what it printed in w's buffers. */
static int parse(struct world *w, const char *line, bool dash, bool with_help, struct parsed *p)
{
    char copy[256], *argv[16], *save = NULL;
    int argc = 0, rc;
    const struct cli_arg args[] = {{"--dir", &p->dir, NULL, false},
                                   {"--out", &p->out, NULL, false},
                                   {"--json", NULL, &p->json, false},
                                   {NULL, &p->file, NULL, dash}};

    *p = (struct parsed){NULL, NULL, NULL, false};
    snprintf(copy, sizeof copy, "%s", line);
    argv[argc++] = "cmd";
    for (char *t = strtok_r(copy, " ", &save); t != NULL && argc < 16;
         t = strtok_r(NULL, " ", &save))
        argv[argc++] = t;
    free(w->out_buf);
    free(w->err_buf);
    w->out = open_memstream(&w->out_buf, &w->out_len);
    w->err = open_memstream(&w->err_buf, &w->err_len);
    assert_non_null(w->out);
    assert_non_null(w->err);
    w->env = (struct cli_env){w->out, w->err, NOW, w_open, w_close, w, NULL, NULL};
    rc = cli_args(&w->env, "tables", argc, argv, with_help ? args_help : NULL, args,
                  CLI_NARGS(args));
    fclose(w->out);
    fclose(w->err);
    return rc;
}

static void options_flags_and_one_operand_are_read_in_order(void **state)
{
    struct world *w = *state;
    struct parsed p;

    assert_int_equal(parse(w, "--json --dir a --out=o --dir b f", false, true, &p), CLI_OK);
    assert_string_equal(p.dir, "b"); /* the last one given */
    assert_string_equal(p.out, "o");
    assert_string_equal(p.file, "f");
    assert_true(p.json);
    assert_string_equal(w->out_buf, "");
    assert_string_equal(w->err_buf, "");
    assert_int_equal(parse(w, "--dir=", false, true, &p), CLI_OK);
    assert_string_equal(p.dir, "");
    assert_null(p.file);
    assert_false(p.json);

    /* "-" is an operand only where the command reads stdin */
    assert_int_equal(parse(w, "--dir a -", true, true, &p), CLI_OK);
    assert_string_equal(p.file, "-");
    assert_int_equal(parse(w, "--dir a -", false, true, &p), CLI_USAGE);
    expect_err_has(w, "unexpected argument '-'");
    assert_null(p.file);

    static const struct {
        const char *line, *msg;
    } bad[] = {
        {"f g", "unexpected argument 'g'"},
        {"--dir", "--dir needs a value"},
        {"--dir a --out", "--out needs a value"},
        {"--json=1", "unexpected argument '--json=1'"},
        {"--dirx a", "unexpected argument '--dirx'"},
        {"-x", "unexpected argument '-x'"},
        {"--bogus --help", "unexpected argument '--bogus'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(parse(w, bad[i].line, true, true, &p), CLI_USAGE);
        expect_err_has(w, bad[i].msg);
        expect_err_has(w, "usage: cohort-participant tables");
        assert_string_equal(w->out_buf, "");
    }

    /* --help answers when it comes before anything wrong */
    assert_int_equal(parse(w, "--dir a --help --bogus", false, true, &p), CLI_HELPED);
    expect_out(w, "the help\n");
    assert_string_equal(w->err_buf, "");
    assert_int_equal(parse(w, "-h", false, false, &p), CLI_HELPED);
    assert_non_null(strstr(w->out_buf, "usage: cohort-participant tables"));
    assert_int_equal(w->opens, 0);
}

static void every_number_key_and_name_on_the_command_line_is_checked(void **state)
{
    static const struct {
        const char *line, *msg;
    } cases[] = {
        {"tables", "give the token's directory with --dir DIR"},
        {"tables --dir", "--dir needs a value"},
        {"tables --dir @ extra", "unexpected argument 'extra'"},
        {"rows --dir @ --table health --limit 0", "--limit: expected a whole number from 1"},
        {"rows --dir @ --table health --limit -1", "--limit: expected a whole number"},
        {"rows --dir @ --table health --limit 1e3", "--limit: expected a whole number"},
        {"rows --dir @ --table health --limit 99999999999999999999999",
         "--limit: expected a whole number"},
        {"rows --dir @ --table health --limit= ", "--limit: expected a whole number"},
        {"delete --dir @ --table health", "exactly one of --all, --id, --where"},
        {"delete --dir @ --table health --all --id 3", "exactly one of --all, --id, --where"},
        {"delete --dir @ --table health --id 1,,2", "--id: expected ids as N[,N...]"},
        {"delete --dir @ --table health --id 0", "--id: expected a whole number from 1"},
        {"delete --dir @ --table health --id x", "--id: expected a whole number"},
        {"delete --dir @ --table my_sleep --where steps>1", "--where works on catalog tables"},
        {"delete --dir @ --table health --where stepz~>~1",
         "--where: unknown column 'stepz' in table health"},
        {"delete --dir @ --table health --where 1)~GROUP~BY~(sex", "--where:"},
        {"policy", "usage: cohort-participant policy"},
        {"policy list --dir @", "show or set, not 'list'"},
        {"policy set --dir @ --allow-authority abcd", "expected a public key as 64 hex digits"},
        {"policy set --dir @ --allow-researcher "
         "zz00000000000000000000000000000000000000000000000000000000000000",
         "expected a public key as 64 hex digits"},
        {"policy set --dir @ --epsilon-total nan", "--epsilon-total: expected a number from 0"},
        {"policy set --dir @ --epsilon-total -1", "--epsilon-total: expected a number"},
        {"policy set --dir @ --epsilon-total 1e3", "--epsilon-total: expected a number"},
        {"policy set --dir @ --epsilon-per-study 1001", "--epsilon-per-study: expected a number"},
        {"policy set --dir @ --epsilon-per-study 1.2.3", "--epsilon-per-study: expected a number"},
        {"policy set --dir @ --min-participants 1000000001", "--min-participants: expected"},
        {"policy set --dir @ --allow-table health.colour",
         "the catalog table health has no column colour"},
        {"policy set --dir @ --allow-table bad-name", "expected TABLE or TABLE.COLUMN"},
        {"policy set --dir @ --allow-study", "--allow-study needs a value"},
        {"audit --dir @ --after x", "--after: expected a whole number"},
        {"init --dir @ --subject", "--subject needs a value"},
        {"import --dir @ --table health", "give --dir DIR, --table T and the FILE"},
        {"import --dir @ --table health --format xml @/in.csv", "--format: csv or jsonl"},
    };
    struct world *w = *state;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = run(w, cases[i].line);
        if (rc != CLI_USAGE || strstr(w->err_buf, cases[i].msg) == NULL)
            fail_msg("'%s': exit %d, stderr:\n%s\nexpected exit 1 and '%s'", cases[i].line, rc,
                     w->err_buf, cases[i].msg);
    }
    /* None of them reached the token. */
    assert_int_equal(w->opens, 0);
}

/* ------------------------------------------------------------- init */

static void init_creates_the_token_and_writes_its_certificate_request(void **state)
{
    struct world *w = *state;
    char path[128], want[512];
    uint8_t buf[512];
    size_t n;
    FILE *f;
    Cohort__CertRequest *csr;

    assert_int_equal(run(w, "init --dir @ --subject alice's~token"), CLI_OK);
    assert_true(w->created);
    snprintf(want, sizeof want,
             "created a token in %s\n"
             "  public key:           0102030000000000000000000000000000000000000000000000000000"
             "000000\n"
             "  subject:              alice's token\n"
             "  certificate request:  %s/token.csr (for an authority to sign)\n",
             w->dir, w->dir);
    expect_out(w, want);
    snprintf(path, sizeof path, "%s/" CLI_CSR_FILE, w->dir);
    f = fopen(path, "rb");
    assert_non_null(f);
    n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    csr = cohort__cert_request__unpack(NULL, n, buf);
    assert_non_null(csr);
    assert_string_equal(csr->subject, "alice's token");
    cohort__cert_request__free_unpacked(csr, NULL);
    /* A second init does not overwrite the request. */
    assert_int_equal(run(w, "init --dir @"), CLI_TOKEN);
    expect_err_has(w, "cannot be written");
}

static void a_token_that_cannot_be_opened_is_an_error_of_the_token(void **state)
{
    struct world *w = *state;

    w->open_rc = PT_ERR_BUSY;
    w->open_msg = "another process has the token open";
    assert_int_equal(run(w, "tables --dir @"), CLI_TOKEN);
    expect_err_has(w, "cannot open the token");
    expect_err_has(w, "another process has the token open");
    w->open_rc = PT_ERR_EXISTS;
    w->open_msg = "the directory is not empty";
    assert_int_equal(run(w, "init --dir @"), CLI_DATA);
    expect_err_has(w, "cannot create a token in");
    w->open_rc = PT_ERR_TOKEN;
    w->open_msg = "its flash was tampered with";
    assert_int_equal(run(w, "rows --dir @ --table health"), CLI_TOKEN);
    expect_err_has(w, "its flash was tampered with");
}

static void the_token_option_is_checked_and_reaches_the_token_opener(void **state)
{
    struct world *w = *state;
    static const struct {
        const char *line, *err;
    } bad[] = {
        {"--token tables --dir @", "--token: an unknown kind of token"},
        {"tables --dir @ --token", "--token needs a value"},
        {"--token= tables --dir @", "--token: an empty value"},
        {"--token usb:1209 tables --dir @", "a vendor and a product id are 1 to 4 hex digits"},
        {"--token usb:1209:c07b0 tables --dir @", "a vendor and a product id"},
        {"--token usb:0:c07b tables --dir @", "a vendor and a product id"},
        {"--token usb:12g9:c07b tables --dir @", "a vendor and a product id"},
        {"--token usb::c07b tables --dir @", "a vendor and a product id"},
        {"--token emulator: tables --dir @", "the emulator's socket path is missing"},
        {"--token "
         "emulator:/tmp/"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa tables --dir @",
         "longer than 107 bytes"},
        {"--token soft: tables --dir @", "the software token's directory is missing"},
        {"--token nfc tables --dir @", "expected usb, usb:VID:PID, emulator:PATH or soft:DIR"},
        {"--token usb --token=usb tables --dir @", "--token is given twice"},
    };

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(run(w, bad[i].line), CLI_USAGE);
        expect_err_has(w, bad[i].err);
    }
    assert_int_equal(w->opens, 0); /* nothing was opened for a bad --token */

    /* Anywhere on the line, in either form; the command never sees it. */
    assert_int_equal(run(w, "--token usb:1209:C07B tables --dir @"), CLI_OK);
    assert_string_equal(w->token, "usb:1209:C07B");
    assert_int_equal(run(w, "tables --token=emulator:/run/cohort/token.sock --dir @"), CLI_OK);
    assert_string_equal(w->token, "emulator:/run/cohort/token.sock");
    assert_int_equal(run(w, "tables --dir @ --token soft:@/elsewhere"), CLI_OK);
    assert_true(strncmp(w->token, "soft:/tmp/test_cli.", 19) == 0);
    assert_int_equal(run(w, "tables --dir @"), CLI_OK);
    assert_string_equal(w->token, "");

    /* A token elsewhere names itself when it cannot be opened. */
    w->open_rc = PT_ERR_LINK;
    w->open_msg = "token 1209:c07b: no token found (not plugged in, or unplugged)";
    assert_int_equal(run(w, "--token usb tables --dir @"), CLI_TOKEN);
    expect_err_has(w, "tables: cannot open the token usb: token 1209:c07b: no token found");
    assert_int_equal(w->opens, 5);
}

/* ----------------------------------------------------------- import */

static void import_loads_a_catalog_table_then_lists_and_shows_it(void **state)
{
    struct world *w = *state;
    char want[1024];

    write_file(w, "in.csv", HEALTH_CSV);
    assert_int_equal(run(w, "import --dir @ --table health @/in.csv"), CLI_OK);
    snprintf(want, sizeof want,
             "imported 3 rows into health from %s/in.csv (a new table); the table has 3 rows\n",
             w->dir);
    expect_out(w, want);
    assert_int_equal(run(w, "tables --dir @"), CLI_OK);
    expect_out(w, "TABLE         ROWS  KIND     COLUMNS\n"
                  "health           3  catalog  participant int, age int, sex text, region text, "
                  "date date, steps int, heart_rate int, weight decimal(1), age_band text\n");
    assert_int_equal(run(w, "rows --dir @ --table health"), CLI_OK);
    expect_out(w, "id  participant  age  sex  region  date        steps  heart_rate  weight  "
                  "age_band\n"
                  " 1            1   42  F    R012    2026-03-01   8412          71    64.5  "
                  "40-49\n"
                  " 2            1   42  F    R012    2026-03-02  10230          68    64.3  "
                  "40-49\n"
                  " 3            1   42  F    R012    2026-03-03   NULL          74    NULL  "
                  "40-49\n"
                  "(3 rows)\n");
    assert_int_equal(run(w, "rows --dir @ --table health --limit 2"), CLI_OK);
    assert_non_null(strstr(w->out_buf, "(2 rows, --limit reached)\n"));
    /* A second import adds to the table. */
    assert_int_equal(run(w, "import --dir @ --table health @/in.csv"), CLI_OK);
    assert_non_null(strstr(w->out_buf, "imported 3 rows into health from"));
    assert_non_null(strstr(w->out_buf, "the table has 6 rows"));
}

static void rows_as_csv_import_back_to_the_same_rows(void **state)
{
    struct world *w = *state;
    char *first;

    write_file(
        w, "in.jsonl",
        "{\"night\":\"2026-01-01\",\"note\":\"a, \\\"quoted\\\"\\nnote\",\"score\":1.5,"
        "\"ok\":true,\"at\":\"2026-01-01T23:00:00Z\",\"n\":-3}\n"
        "{\"night\":null,\"note\":\"\",\"score\":null,\"ok\":null,\"at\":null,\"n\":null}\n");
    assert_int_equal(run(w, "import --dir @ --table my_sleep --schema "
                            "night~date,note~text,score~decimal(2),ok~bool,at~timestamp,n~int "
                            "@/in.jsonl"),
                     CLI_OK);
    assert_int_equal(run(w, "rows --dir @ --table my_sleep --csv"), CLI_OK);
    expect_out(w, "night,note,score,ok,at,n\n"
                  "2026-01-01,\"a, \"\"quoted\"\"\nnote\",1.50,true,2026-01-01T23:00:00Z,-3\n"
                  ",\"\",,,,\n");
    first = strdup(w->out_buf);
    write_file(w, "in.csv", first);
    /* Into the same table again (its schema is now the token's: no --schema needed). */
    assert_int_equal(run(w, "import --dir @ --table my_sleep @/in.csv"), CLI_OK);
    assert_int_equal(run(w, "rows --dir @ --table my_sleep --csv"), CLI_OK);
    assert_int_equal(strlen(w->out_buf), 2 * strlen(first) - strlen("night,note,score,ok,at,n\n"));
    assert_non_null(strstr(w->out_buf, first + strlen("night,note,score,ok,at,n\n")));
    free(first);
    /* The terminal view escapes the line break in the note. */
    assert_int_equal(run(w, "rows --dir @ --table my_sleep --limit 1"), CLI_OK);
    assert_non_null(strstr(w->out_buf, "a, \"quoted\"\\x0anote"));
}

static void a_one_column_tables_nulls_survive_the_csv_round_trip(void **state)
{
    struct world *w = *state;

    write_file(w, "in.csv", "n\n1\n\"\"\n2\n");
    assert_int_equal(run(w, "import --dir @ --table nums --schema n~int @/in.csv"), CLI_OK);
    assert_non_null(strstr(w->out_buf, "imported 3 rows"));
    assert_int_equal(run(w, "rows --dir @ --table nums --csv"), CLI_OK);
    expect_out(w, "n\n1\n\"\"\n2\n");
}

static void a_bad_file_imports_nothing_and_says_where(void **state)
{
    struct world *w = *state;

    write_file(w, "in.csv", HEALTH_CSV "1,42,F,R012,2026-03-04,many,70,64.0,40-49\n");
    assert_int_equal(run(w, "import --dir @ --table health @/in.csv"), CLI_DATA);
    expect_err_has(w, "in.csv:5: column 'steps' (6): 'many' is not an integer");
    expect_err_has(w, "nothing was imported");
    assert_int_equal(w->f->n_requests, 2); /* the table lookup and nothing else */
    assert_int_equal(w->f->n_tables, 0);
}

static void a_new_table_needs_its_schema_and_a_catalog_table_refuses_one(void **state)
{
    struct world *w = *state;

    write_file(w, "in.csv", "night,minutes\n2026-01-01,420\n");
    assert_int_equal(run(w, "import --dir @ --table my_sleep @/in.csv"), CLI_USAGE);
    expect_err_has(w, "my_sleep is neither a table of this token nor a catalog table (health, "
                      "energy, bank_operations, location_visits, documents)");
    assert_int_equal(run(w, "import --dir @ --table health --schema a~int @/in.csv"), CLI_USAGE);
    expect_err_has(w, "health is a catalog table: its columns are fixed");
    assert_int_equal(run(w, "import --dir @ --table my_sleep --schema night~date,minutes~flaot "
                            "@/in.csv"),
                     CLI_USAGE);
    expect_err_has(w, "--schema: column 2: unknown type");
    assert_int_equal(run(w, "import --dir @ --table my_sleep --schema night~date,minutes~int "
                            "@/in.csv"),
                     CLI_OK);
    assert_int_equal(run(w, "import --dir @ --table my_sleep --schema night~date,minutes~text "
                            "@/in.csv"),
                     CLI_DATA);
    expect_err_has(w, "the token's table my_sleep has other columns: night date, minutes int");
    assert_int_equal(run(w, "import --dir @ --table health @/missing.csv"), CLI_DATA);
    expect_err_has(w, "cannot read");
}

/* ----------------------------------------------------------- delete */

static void delete_sends_each_id_once_and_reports_the_log(void **state)
{
    struct world *w = *state;

    write_file(w, "in.csv", HEALTH_CSV);
    assert_int_equal(run(w, "import --dir @ --table health @/in.csv"), CLI_OK);
    assert_int_equal(run(w, "delete --dir @ --table health --id 3,1 --id 3"), CLI_OK);
    expect_out(w, "deleted 2 rows from health; the token's log: 1000 -> 980 bytes\n");
    assert_int_equal(w->f->last_delete->n_ids, 2);
    assert_int_equal(w->f->last_delete->ids[0], 1);
    assert_int_equal(w->f->last_delete->ids[1], 3);
    assert_int_equal(run(w, "delete --dir @ --table health --where date~<~'2026-03-02'~OR~steps~"
                            "IS~NULL"),
                     CLI_OK);
    assert_int_equal(w->f->last_delete->n_where, 6);
    assert_string_equal(w->f->last_delete->where[0]->column, "date");
    assert_int_equal(w->f->last_delete->where[5]->op, COHORT__OP__OP_OR);
    assert_int_equal(w->f->last_delete->where[1]->value->type, COHORT__VALUE_TYPE__VT_DATE);
    assert_int_equal(run(w, "delete --dir @ --table health --id 2,99"), CLI_DATA);
    expect_err_has(w, "no such row: an id that is not in the table; nothing was deleted");
    assert_int_equal(w->f->tables[0].n_rows, 1);
    assert_int_equal(run(w, "delete --dir @ --table sleep --id 2"), CLI_DATA);
    expect_err_has(w, "the token has no table sleep");
    assert_int_equal(run(w, "delete --dir @ --table health --all"), CLI_OK);
    expect_out(w, "deleted table health and its 1 row; the token's log: 1000 -> 990 bytes\n");
    assert_int_equal(run(w, "tables --dir @"), CLI_OK);
    expect_out(w, "no tables yet: cohort-participant import adds one\n");
}

static void a_token_refusal_shows_its_reason_and_a_broken_token_exits_3(void **state)
{
    struct world *w = *state;

    w->f->refuse_status = TK_ERR_POLICY;
    w->f->refuse_reason = "study \x1b[2Jsleep is not allowed";
    assert_int_equal(run(w, "compact --dir @"), CLI_DATA);
    expect_err_has(w, "the token refused: ");
    expect_err_has(w, "(TK_ERR_POLICY): study \\x1b[2Jsleep is not allowed");
    assert_null(strchr(w->err_buf, '\x1b'));
    w->f->refuse_status = TK_ERR_TAMPERED;
    w->f->refuse_reason = NULL;
    assert_int_equal(run(w, "compact --dir @"), CLI_TOKEN);
    expect_err_has(w, "TK_ERR_TAMPERED");
    assert_int_equal(run(w, "compact --dir @"), CLI_OK);
    expect_out(w, "compacted the token's log: 1000 -> 600 bytes\n");
}

/* ----------------------------------------------------------- policy */

static void policy_set_replaces_the_policy_and_shows_it(void **state)
{
    struct world *w = *state;

    assert_int_equal(run(w, "policy show --dir @"), CLI_OK);
    expect_out(w, "no consent policy set: no study may query this token\n");
    w->f->refuse_status = TK_ERR_NOT_FOUND; /* another way to say there is none */
    assert_int_equal(run(w, "policy show --dir @"), CLI_OK);
    expect_out(w, "no consent policy set: no study may query this token\n");
    assert_int_equal(run(w, "policy set --dir @ --allow-table health --allow-table energy.kwh "
                            "--allow-study sleep-2026 --allow-researcher "
                            "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF "
                            "--min-participants 100 --min-group-size 10 --require-dp "
                            "--epsilon-per-study 0.5 --epsilon-total 2"),
                     CLI_OK);
    expect_out(w, "consent policy, set 2026-07-25T17:20:00Z\n"
                  "  tables:               health, energy.kwh\n"
                  "  studies:              sleep-2026\n"
                  "  researchers:          "
                  "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n"
                  "  authorities:          any the token trusts\n"
                  "  min participants:     100\n"
                  "  min group size:       10\n"
                  "  differential privacy: required\n"
                  "  epsilon budget:       0.5 per study, 2 in total\n");
    /* Set replaces everything: what is not given is back to its default. */
    assert_int_equal(run(w, "policy set --dir @ --allow-table health"), CLI_OK);
    expect_out(w, "consent policy, set 2026-07-25T17:20:00Z\n"
                  "  tables:               health\n"
                  "  studies:              any\n"
                  "  researchers:          any certified researcher\n"
                  "  authorities:          any the token trusts\n"
                  "  min participants:     0\n"
                  "  min group size:       0\n"
                  "  differential privacy: optional\n"
                  "  epsilon budget:       0 per study, 0 in total\n");
}

/* ------------------------------------------------------------ audit */

static void fill_audit(struct fake_token *f)
{
    struct pt_audit_entry *e = &f->audit[0];
    e->seq = 1;
    e->time = NOW;
    strcpy(e->event, "collect");
    strcpy(e->study, "sleep-2026");
    strcpy(e->researcher, "Dr \x1b]0;owned\x07Who");
    e->has_researcher_pk = true;
    memset(e->researcher_pk, 0xaa, 32);
    strcpy(e->table, "health");
    e->accepted = true;
    e->epsilon = 0.25;
    strcpy(e->sql, "SELECT COUNT(*) FROM health");
    e->query_id_len = 2;
    e->query_id[0] = 0x01;
    e->query_id[1] = 0xff;
    e = &f->audit[1];
    e->seq = 2;
    e->time = NOW + 60;
    strcpy(e->event, "collect");
    strcpy(e->study, "ads");
    strcpy(e->table, "bank_operations");
    e->status = TK_ERR_POLICY;
    strcpy(e->reason, "table bank_operations is not in the owner's policy");
    f->n_audit = 2;
}

static void the_audit_log_shows_each_decision_with_strangers_text_escaped(void **state)
{
    struct world *w = *state;

    assert_int_equal(run(w, "audit --dir @"), CLI_OK);
    expect_out(w, "the audit log is empty\n");
    fill_audit(w->f);
    assert_int_equal(run(w, "audit --dir @"), CLI_OK);
    expect_out(w, "  SEQ  TIME                  EVENT     RESULT    STUDY             RESEARCHER   "
                  "     TABLE             EPSILON  REASON\n"
                  "    1  2026-07-25T17:20:00Z  collect   accepted  sleep-2026        "
                  "Dr \\x1b]0;owned\\x07Who  health               0.25  -\n"
                  "    2  2026-07-25T17:21:00Z  collect   refused   ads               -         "
                  "        bank_operations         0  table bank_operations is not in the owner's "
                  "policy\n");
    assert_int_equal(run(w, "audit --dir @ --after 1"), CLI_OK);
    assert_null(strstr(w->out_buf, "sleep-2026"));
    assert_non_null(strstr(w->out_buf, "ads"));
    assert_int_equal(run(w, "audit --dir @ --json --limit 1"), CLI_OK);
    expect_out(w, "{\"seq\":1,\"time\":\"2026-07-25T17:20:00Z\",\"event\":\"collect\","
                  "\"accepted\":true,\"status\":0,\"status_name\":\"\",\"study\":\"sleep-2026\","
                  "\"researcher\":\"Dr \\u001b]0;owned\\u0007Who\",\"researcher_pk\":"
                  "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\","
                  "\"table\":\"health\",\"epsilon\":0.25,\"reason\":\"\",\"query_id\":\"01ff\","
                  "\"sql\":\"SELECT COUNT(*) FROM health\"}\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(every_command_has_help_and_the_program_lists_them, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(options_flags_and_one_operand_are_read_in_order, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(every_number_key_and_name_on_the_command_line_is_checked,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(init_creates_the_token_and_writes_its_certificate_request,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(a_token_that_cannot_be_opened_is_an_error_of_the_token,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(the_token_option_is_checked_and_reaches_the_token_opener,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(import_loads_a_catalog_table_then_lists_and_shows_it, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(rows_as_csv_import_back_to_the_same_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(a_one_column_tables_nulls_survive_the_csv_round_trip, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_bad_file_imports_nothing_and_says_where, setup, teardown),
        cmocka_unit_test_setup_teardown(
            a_new_table_needs_its_schema_and_a_catalog_table_refuses_one, setup, teardown),
        cmocka_unit_test_setup_teardown(delete_sends_each_id_once_and_reports_the_log, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(a_token_refusal_shows_its_reason_and_a_broken_token_exits_3,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(policy_set_replaces_the_policy_and_shows_it, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            the_audit_log_shows_each_decision_with_strangers_text_escaped, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
