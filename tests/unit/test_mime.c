/*
 * test_mime.c - unit tests for the MIME structure parser and its IMAP output
 * (src/store/mime.c): real-world message shapes, offsets, CRLF sizes, ENVELOPE rules.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "store/mime.h"

/* BODYSTRUCTURE (ext) or BODY of a message, as a C string the test frees. */
static char *bs(const char *msg, bool ext)
{
    struct mime_part *p = mime_parse(msg, strlen(msg));
    assert_non_null(p);
    struct buf b;
    buf_init(&b, 0);
    assert_true(mime_write_bodystructure(p, ext, &b));
    mime_part_free(p);
    return buf_steal(&b);
}

static char *env(const char *msg)
{
    struct mime_part *p = mime_parse(msg, strlen(msg));
    assert_non_null(p);
    struct buf b;
    buf_init(&b, 0);
    assert_true(mime_write_envelope(p, &b));
    mime_part_free(p);
    return buf_steal(&b);
}

#define ASSERT_BS(msg, ext, want)                                                                  \
    do {                                                                                           \
        char *got_ = bs(msg, ext);                                                                 \
        assert_string_equal(got_, want);                                                           \
        free(got_);                                                                                \
    } while (0)

static void test_plain_lf(void **state)
{
    (void)state;
    /* The seed 001 shape: "test body" plus newline, stored with LF. */
    const char *m = "From: root@localhost\nSubject: test\n\ntest body\n";
    ASSERT_BS(m, false, "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 11 1)");
    ASSERT_BS(m, true,
              "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 11 1 NIL NIL NIL "
              "NIL)");
    struct mime_part *p = mime_parse(m, strlen(m));
    assert_int_equal(p->header_offset, 0);
    assert_int_equal(p->header_size, 36);
    assert_int_equal(p->header_vsize, 39);
    assert_int_equal(p->body_offset, 36);
    assert_int_equal(p->body_size, 10);
    mime_part_free(p);
}

static void test_crlf_same_as_lf(void **state)
{
    (void)state;
    const char *m = "Subject: x\r\nContent-Type: TEXT/html; CHARSET=\"utf-8\"\r\n\r\na\r\nb\r\n";
    ASSERT_BS(m, false, "(\"TEXT\" \"html\" (\"charset\" \"utf-8\") NIL NIL \"7bit\" 6 2)");
}

static void test_alternative(void **state)
{
    (void)state;
    const char *m = "Content-Type: multipart/alternative; boundary=\"b1\"\n"
                    "\n"
                    "preamble\n"
                    "--b1\n"
                    "Content-Type: text/plain; charset=utf-8\n"
                    "Content-Transfer-Encoding: quoted-printable\n"
                    "\n"
                    "hello\n"
                    "--b1\n"
                    "Content-Type: text/html\n"
                    "\n"
                    "<p>hello</p>\n"
                    "--b1--\n"
                    "epilogue\n";
    ASSERT_BS(m, false,
              "((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"quoted-printable\" 5 0)"
              "(\"text\" \"html\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 12 0) "
              "\"alternative\")");
    ASSERT_BS(
        m, true,
        "((\"text\" \"plain\" (\"charset\" \"utf-8\") NIL NIL \"quoted-printable\" 5 0 NIL "
        "NIL NIL NIL)"
        "(\"text\" \"html\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 12 0 NIL NIL NIL NIL) "
        "\"alternative\" (\"boundary\" \"b1\") NIL NIL NIL)");
    struct mime_part *p = mime_parse(m, strlen(m));
    assert_int_equal(p->n_children, 2);
    const uint32_t path[] = {2};
    const struct mime_part *c = mime_part_find(p, path, 1);
    assert_non_null(c);
    assert_memory_equal(m + c->body_offset, "<p>hello</p>", c->body_size);
    const uint32_t bad[] = {3};
    assert_null(mime_part_find(p, bad, 1));
    mime_part_free(p);
}

static void test_mixed_attachment(void **state)
{
    (void)state;
    const char *m = "Content-Type: multipart/mixed; boundary=XyZ\r\n"
                    "\r\n"
                    "--XyZ\r\n"
                    "\r\n"
                    "body text\r\n"
                    "--XyZ\r\n"
                    "Content-Type: application/pdf; name=\"a b.pdf\"\r\n"
                    "Content-Disposition: attachment; filename=\"a b.pdf\"\r\n"
                    "Content-Transfer-Encoding: base64\r\n"
                    "Content-ID: <id1@x>\r\n"
                    "Content-Description: the doc\r\n"
                    "Content-Language: en, de\r\n"
                    "Content-Location: http://x/y\r\n"
                    "\r\n"
                    "AAAA\r\n"
                    "--XyZ--\r\n";
    ASSERT_BS(m, true,
              "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 9 0 NIL NIL NIL "
              "NIL)(\"application\" \"pdf\" (\"name\" \"a b.pdf\") \"<id1@x>\" \"the doc\" "
              "\"base64\" 4 NIL (\"attachment\" (\"filename\" \"a b.pdf\")) (\"en\" \"de\") "
              "\"http://x/y\") \"mixed\" (\"boundary\" \"XyZ\") NIL NIL NIL)");
}

static void test_nested_rfc822(void **state)
{
    (void)state;
    const char *m = "From: a@b.c\n"
                    "Content-Type: multipart/mixed; boundary=o\n"
                    "\n"
                    "--o\n"
                    "\n"
                    "see attached\n"
                    "--o\n"
                    "Content-Type: message/rfc822\n"
                    "\n"
                    "From: \"In Ner\" <in@ner.test>\n"
                    "Subject: inner\n"
                    "Content-Type: multipart/alternative; boundary=i\n"
                    "\n"
                    "--i\n"
                    "\n"
                    "x\n"
                    "--i--\n"
                    "--o--\n";
    char *got = bs(m, false);
    assert_string_equal(
        got, "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 12 0)"
             "(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 112 "
             "(NIL \"inner\" ((\"In Ner\" NIL \"in\" \"ner.test\")) ((\"In Ner\" NIL \"in\" "
             "\"ner.test\")) ((\"In Ner\" NIL \"in\" \"ner.test\")) NIL NIL NIL NIL NIL) "
             "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 1 0) "
             "\"alternative\") 7) \"mixed\")");
    free(got);
    struct mime_part *p = mime_parse(m, strlen(m));
    const uint32_t p2[] = {2};
    const struct mime_part *c = mime_part_find(p, p2, 1);
    assert_true(c->is_message);
    assert_memory_equal(m + c->message->header_offset, "From: \"In Ner\"", 14);
    const uint32_t p21[] = {2, 1};
    c = mime_part_find(p, p21, 2);
    assert_non_null(c);
    assert_memory_equal(m + c->body_offset, "x", 1);
    assert_int_equal(c->body_size, 1);
    mime_part_free(p);
}

static void test_single_part_numbering(void **state)
{
    (void)state;
    const char *m = "Subject: s\n\nbody\n";
    struct mime_part *p = mime_parse(m, strlen(m));
    const uint32_t one[] = {1};
    assert_ptr_equal(mime_part_find(p, one, 1), p);
    const uint32_t two[] = {2};
    assert_null(mime_part_find(p, two, 1));
    const uint32_t oneone[] = {1, 1};
    assert_null(mime_part_find(p, oneone, 2));
    mime_part_free(p);
}

static void test_rfc2231(void **state)
{
    (void)state;
    const char *m = "Content-Type: application/x-stuff;\n"
                    " title*0*=us-ascii'en'This%20is%20even%20more%20;\n"
                    " title*1*=%2A%2A%2Afun%2A%2A%2A%20;\n"
                    " title*2=\"isn't it!\"\n"
                    "Content-Disposition: attachment; filename*=UTF-8''%E2%82%AC.txt\n"
                    "\n"
                    "x";
    ASSERT_BS(
        m, true,
        "(\"application\" \"x-stuff\" (\"title*\" "
        "\"us-ascii'en'This%20is%20even%20more%20%2A%2A%2Afun%2A%2A%2A%20isn%27t%20it!\") "
        "NIL NIL \"7bit\" 1 NIL (\"attachment\" (\"filename*\" \"UTF-8''%E2%82%AC.txt\")) NIL "
        "NIL)");
    const char *m2 = "Content-Type: text/plain; name*0=\"long\"; name*1=\"name.txt\"\n\n";
    ASSERT_BS(m2, false, "(\"text\" \"plain\" (\"name\" \"longname.txt\") NIL NIL \"7bit\" 0 0)");
}

static void test_missing_content_type_and_encoded_words(void **state)
{
    (void)state;
    const char *m = "Subject: =?UTF-8?B?w6TDtsO8?=\nDate: Wed, 1 Jan 2025 00:00:00 +0000\n"
                    "Message-ID: <m1@x>\nIn-Reply-To: <m0@x>\n\nhi";
    char *e = env(m);
    assert_string_equal(e, "(\"Wed, 1 Jan 2025 00:00:00 +0000\" \"=?UTF-8?B?w6TDtsO8?=\" NIL NIL "
                           "NIL NIL NIL NIL \"<m0@x>\" \"<m1@x>\")");
    free(e);
    ASSERT_BS(m, false, "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 2 0)");
}

static void test_eight_bit_literal(void **state)
{
    (void)state;
    const char *m = "Subject: Gr\xc3\xbc\xc3\x9f\x65\nFrom: J\xc3\xb6rg <j@x.de>\n\n";
    char *e = env(m);
    assert_string_equal(e,
                        "(NIL {7}\r\nGr\xc3\xbc\xc3\x9f\x65 (({5}\r\nJ\xc3\xb6rg NIL \"j\" "
                        "\"x.de\")) (({5}\r\nJ\xc3\xb6rg NIL \"j\" \"x.de\")) (({5}\r\nJ\xc3\xb6rg "
                        "NIL \"j\" \"x.de\")) NIL NIL NIL NIL NIL)");
    free(e);
}

static void test_envelope_addresses(void **state)
{
    (void)state;
    const char *m = "From: \"Doe, John\" <john@example.com>\n"
                    "Sender: sec@example.com (Secretary)\n"
                    "To: a@x.org, B <b@y.org>,\n\tundisclosed-recipients:;\n"
                    "Cc: Team: c@z.org, \"D \\\"Q\\\"\" <d@z.org>;\n"
                    "Bcc: nodomain\n"
                    "Subject: has \"quotes\" and \\\n"
                    "\n";
    char *e = env(m);
    assert_string_equal(
        e, "(NIL \"has \\\"quotes\\\" and \\\\\" ((\"Doe, John\" NIL \"john\" \"example.com\")) "
           "((\"Secretary\" NIL \"sec\" \"example.com\")) ((\"Doe, John\" NIL \"john\" "
           "\"example.com\")) "
           "((NIL NIL \"a\" \"x.org\")(\"B\" NIL \"b\" \"y.org\")(NIL NIL "
           "\"undisclosed-recipients\" NIL)(NIL NIL NIL NIL)) "
           "((NIL NIL \"Team\" NIL)(NIL NIL \"c\" \"z.org\")(\"D \\\"Q\\\"\" NIL \"d\" "
           "\"z.org\")(NIL NIL NIL NIL)) ((NIL NIL \"nodomain\" \"MISSING_DOMAIN\")) NIL NIL)");
    free(e);
}

static void test_folded_header(void **state)
{
    (void)state;
    const char *m = "Subject: one\r\n two\r\n\tthree\r\n\r\n";
    char *e = env(m);
    assert_string_equal(e, "(NIL \"one two\tthree\" NIL NIL NIL NIL NIL NIL NIL NIL)");
    free(e);
}

static void test_header_filter(void **state)
{
    (void)state;
    const char *h = "From: a\nSubject: s\n x\nTo: b\n\n";
    const char *names[] = {"subject", "TO"};
    struct buf b;
    buf_init(&b, 0);
    assert_true(mime_header_filter(h, strlen(h), names, 2, false, &b));
    assert_string_equal(buf_cstr(&b), "Subject: s\r\n x\r\nTo: b\r\n\r\n");
    buf_reset(&b);
    assert_true(mime_header_filter(h, strlen(h), names, 2, true, &b));
    assert_string_equal(buf_cstr(&b), "From: a\r\n\r\n");
    buf_free(&b);
}

static void test_depth_limit(void **state)
{
    (void)state;
    /* 150 nested multiparts, each with its own boundary: deeper than the limit is a leaf. */
    struct buf m;
    buf_init(&m, 0);
    for (int i = 0; i < 150; i++)
        buf_printf(&m, "Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n", i, i);
    buf_append_str(&m, "\nleaf\n");
    struct mime_part *p = mime_parse(m.data, m.len);
    assert_non_null(p);
    int depth = 0;
    const struct mime_part *c = p;
    while (c->is_multipart) {
        c = c->children;
        depth++;
    }
    assert_int_equal(depth, MIME_MAX_DEPTH);
    assert_string_equal(c->type, "application");
    struct buf out;
    buf_init(&out, 0);
    assert_true(mime_write_bodystructure(p, true, &out));
    buf_free(&out);
    mime_part_free(p);
    buf_free(&m);
}

static void test_multipart_without_parts(void **state)
{
    (void)state;
    ASSERT_BS("Content-Type: multipart/mixed; boundary=zz\n\nno parts here\n", false,
              "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0) \"mixed\")");
    ASSERT_BS("Content-Type: multipart/mixed\n\nx\n", false,
              "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 3 1)");
}

static void test_digest_default(void **state)
{
    (void)state;
    const char *m =
        "Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: in\n\nx\n--d--\n";
    char *got = bs(m, false);
    assert_non_null(strstr(got, "(\"message\" \"rfc822\""));
    free(got);
}

static void test_crlf_size(void **state)
{
    (void)state;
    assert_int_equal(mime_crlf_size("a\nb\r\nc", 6), 7);
    assert_int_equal(mime_crlf_size("\n", 1), 2);
    assert_int_equal(mime_crlf_size("", 0), 0);
}

static void test_header_only_message(void **state)
{
    (void)state;
    /* No empty line: everything is header, the body is empty. */
    const char *m = "Subject: only\nFrom: a@b";
    struct mime_part *p = mime_parse(m, strlen(m));
    assert_int_equal(p->header_size, strlen(m));
    assert_int_equal(p->body_size, 0);
    assert_int_equal(p->body_lines, 0);
    assert_string_equal(p->env[MIME_ENV_SUBJECT], "only");
    mime_part_free(p);
    p = mime_parse("", 0);
    assert_non_null(p);
    assert_int_equal(p->body_size, 0);
    mime_part_free(p);
}

static void test_crlf_nested_offsets(void **state)
{
    (void)state;
    const char *m = "Content-Type: multipart/mixed; boundary=\"a b\"\r\n\r\n"
                    "--a b  \r\n"
                    "Content-Type: text/plain\r\n\r\n"
                    "x\r\ny\r\n"
                    "--a bc\r\n"
                    "still part one\r\n"
                    "--a b--\r\n";
    struct mime_part *p = mime_parse(m, strlen(m));
    assert_int_equal(p->n_children, 1);
    const struct mime_part *c = p->children;
    const char *want = "x\r\ny\r\n--a bc\r\nstill part one";
    assert_int_equal(c->body_size, strlen(want));
    assert_memory_equal(m + c->body_offset, want, strlen(want));
    assert_int_equal(c->body_vsize, c->body_size); /* already CRLF */
    assert_int_equal(c->body_lines, 3);            /* line ends, as Dovecot counts */
    assert_memory_equal(m + c->header_offset, "Content-Type: text/plain\r\n\r\n", c->header_size);
    mime_part_free(p);
}

static void test_field_limits_and_odd_lines(void **state)
{
    (void)state;
    struct buf m;
    buf_init(&m, 0);
    for (int i = 0; i < MIME_MAX_FIELDS + 50; i++)
        buf_printf(&m, "X-Filler-%d: value\n", i);
    buf_append_str(&m, "Subject: late\nno colon on this line\n\tcontinued\n\nbody\n");
    struct mime_part *p = mime_parse(m.data, m.len);
    /* Fields past the limit are not looked at, but the header still ends where it ends. */
    assert_null(p->env[MIME_ENV_SUBJECT]);
    assert_memory_equal(m.data + p->body_offset, "body\n", 5);
    mime_part_free(p);
    buf_free(&m);
}

static void test_params_quoting_and_comments(void **state)
{
    (void)state;
    const char *m = "Content-Type: text/plain (comment) ; charset = \"iso-8859-1\" (c2);"
                    " format=flowed; junk; name=\"a\\\"b\\\\c\"\n"
                    "Content-Transfer-Encoding: (why) QUOTED-PRINTABLE\n\nx";
    ASSERT_BS(m, false,
              "(\"text\" \"plain\" (\"charset\" \"iso-8859-1\" \"format\" \"flowed\" \"name\" "
              "\"a\\\"b\\\\c\") NIL NIL \"QUOTED-PRINTABLE\" 1 0)");
    /* a broken Content-Type falls back to text/plain (RFC 2045 §5.2) */
    ASSERT_BS("Content-Type: garbage\n\nx", false,
              "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 1 0)");
}

static void test_many_parts_linear(void **state)
{
    (void)state;
    /* 5000 parts: must stay fast (one scan per level) and all be found. */
    struct buf m;
    buf_init(&m, 0);
    buf_append_str(&m, "Content-Type: multipart/mixed; boundary=z\n\n");
    for (int i = 0; i < 5000; i++)
        buf_printf(&m, "--z\n\npart %d\n", i);
    buf_append_str(&m, "--z--\n");
    struct mime_part *p = mime_parse(m.data, m.len);
    assert_int_equal(p->n_children, 5000);
    const uint32_t path[] = {4321};
    const struct mime_part *c = mime_part_find(p, path, 1);
    assert_memory_equal(m.data + c->body_offset, "part 4320", 9);
    mime_part_free(p);
    buf_free(&m);
}

/* ---- mime_decode.c ---- */

static char *hdec(const char *v)
{
    struct buf b;
    buf_init(&b, 0);
    assert_true(mime_header_decode(v, strlen(v), &b));
    buf_append(&b, "", 0);
    char *r = buf_steal(&b);
    return r ? r : strdup("");
}

#define ASSERT_HDEC(in, want)                                                                      \
    do {                                                                                           \
        char *got_ = hdec(in);                                                                     \
        assert_string_equal(got_, want);                                                           \
        free(got_);                                                                                \
    } while (0)

static void test_rfc2047_decode(void **state)
{
    (void)state;
    ASSERT_HDEC("plain text", "plain text");
    ASSERT_HDEC("=?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4=?=", "Grüße aus Köln");
    ASSERT_HDEC("=?iso-8859-1?q?J=F6rg_M=FCller?= <j@x>", "Jörg Müller <j@x>");
    /* RFC 2047 §6.2: white space between adjacent encoded-words goes */
    ASSERT_HDEC("=?UTF-8?Q?a?= \t =?UTF-8?Q?b?= c", "ab c");
    ASSERT_HDEC("x =?UTF-8?Q?a?=", "x a");
    /* RFC 2231 §5 language suffix; iconv charsets */
    ASSERT_HDEC("=?UTF-8*en?Q?hi?=", "hi");
    ASSERT_HDEC("=?KOI8-R?B?8NLJ18XU?=", "Привет");
    /* broken words stay as written */
    ASSERT_HDEC("=?UTF-8?X?abc?=", "=?UTF-8?X?abc?=");
    ASSERT_HDEC("=?UTF-8?Q?no end", "=?UTF-8?Q?no end");
    ASSERT_HDEC("=?", "=?");
    ASSERT_HDEC("=?UTF-8?Q?=4?=", "=4");
}

static bool mfind(const char *needle, const char *text)
{
    struct mime_matcher *m = mime_matcher_new(needle, strlen(needle));
    assert_non_null(m);
    /* fed one byte at a time: state must carry across pieces */
    for (size_t i = 0; text[i]; i++)
        mime_matcher_feed(m, text + i, 1);
    mime_matcher_break(m);
    bool r = mime_matcher_found(m);
    /* and at once (the US-ASCII runs take the fast path): the same answer */
    mime_matcher_reset(m);
    mime_matcher_feed(m, text, strlen(text));
    mime_matcher_break(m);
    assert_int_equal(r, mime_matcher_found(m));
    mime_matcher_free(m);
    return r;
}

static void test_matcher_folding(void **state)
{
    (void)state;
    assert_true(mfind("", "anything"));
    assert_true(mfind("HELLO", "say hello there"));
    assert_true(mfind("aab", "aaab")); /* KMP fallback */
    assert_true(mfind("abab", "abaabab"));
    assert_false(mfind("abc", "ab"));
    assert_true(mfind("ÉTÉ", "un été chaud"));
    assert_true(mfind("łódź", "ŁÓDŹ"));
    assert_true(mfind("ПРИВЕТ", "привет"));
    assert_true(mfind("ΣΟΦ", "σοφ"));
    assert_true(mfind("ΆΈ", "άέ"));                 /* accented Greek: towlower_l */
    assert_true(mfind("tiếng việt", "TIẾNG VIỆT")); /* Latin Extended Additional */
    assert_false(mfind("é", "e"));
    /* invalid UTF-8 bytes stand for themselves */
    assert_true(mfind("\xe9t\xe9", "un \xe9t\xe9"));
    assert_false(mfind("\xe9", "\xc3\xa9"));
    /* a non-ASCII character whose folding is US-ASCII (full-width a, U+FF41, is "A") can
     * start or continue a match that US-ASCII bytes began: the fast path must hand it to
     * the decoder */
    assert_true(mfind("a", "xａx"));
    assert_true(mfind("banana", "banａna"));
    assert_true(mfind("abc", "abａabc"));
    assert_false(mfind("abc", "abéc"));
}

/* The matcher against a plain case-insensitive search, on random US-ASCII texts (with
 * a non-ASCII character now and then) fed in random pieces. */
static void test_matcher_random(void **state)
{
    (void)state;
    static const char *const alphabet[] = {"a", "A", "b", "B", "\n", " ", "\xc3\xa9"};
    unsigned seed = 12345;
    for (int round = 0; round < 2000; round++) {
        char text[200] = "", needle[8] = "";
        size_t tl = 0, nl = 0;
        unsigned n_text = (seed = seed * 1103515245u + 12345u) >> 16 & 63;
        for (unsigned i = 0; i < n_text; i++) {
            seed = seed * 1103515245u + 12345u;
            const char *c = alphabet[(seed >> 16) % (round & 1 ? 7 : 6)];
            memcpy(text + tl, c, strlen(c));
            tl += strlen(c);
        }
        text[tl] = '\0';
        unsigned n_needle = 1 + ((seed = seed * 1103515245u + 12345u) >> 16 & 3);
        for (unsigned i = 0; i < n_needle; i++) {
            seed = seed * 1103515245u + 12345u;
            needle[nl++] = "aAbB "[(seed >> 16) % 5];
        }
        needle[nl] = '\0';
        bool expected = strcasestr(text, needle) != NULL;
        struct mime_matcher *m = mime_matcher_new(needle, nl);
        assert_non_null(m);
        for (size_t pos = 0; pos < tl;) {
            seed = seed * 1103515245u + 12345u;
            size_t piece = 1 + (seed >> 16) % 9;
            if (piece > tl - pos)
                piece = tl - pos;
            mime_matcher_feed(m, text + pos, piece);
            pos += piece;
        }
        mime_matcher_break(m);
        if (mime_matcher_found(m) != expected)
            fail_msg("needle \"%s\" in \"%s\": expected %d", needle, text, expected);
        mime_matcher_free(m);
    }
}

static bool bfind(const char *needle, const char *msg)
{
    struct mime_part *p = mime_parse(msg, strlen(msg));
    assert_non_null(p);
    struct mime_matcher *m = mime_matcher_new(needle, strlen(needle));
    bool r = mime_body_search(msg, strlen(msg), p, m, 1 << 20);
    mime_matcher_free(m);
    mime_part_free(p);
    return r;
}

static bool mfind_cmp(const char *needle, const char *text, enum mime_comparator cmp)
{
    struct mime_matcher *m = mime_matcher_new_cmp(needle, strlen(needle), cmp);
    assert_non_null(m);
    mime_matcher_feed(m, text, strlen(text));
    mime_matcher_break(m);
    bool r = mime_matcher_found(m);
    mime_matcher_free(m);
    return r;
}

/* RFC 5051 i;unicode-casemap (titlecase, then NFKD decompositions) against RFC 4790
 * i;ascii-casemap, as SEARCH uses them after COMPARATOR (RFC 5255). */
static void test_matcher_comparators(void **state)
{
    (void)state;
    const enum mime_comparator u = MIME_CMP_UNICODE_CASEMAP, a = MIME_CMP_ASCII_CASEMAP;
    assert_true(mfind_cmp("hello", "HeLLo", u));
    assert_true(mfind_cmp("hello", "HeLLo", a));
    assert_true(mfind_cmp("été", "ÉTÉ", u));
    assert_false(mfind_cmp("été", "ÉTÉ", a)); /* only a-z fold */
    assert_true(mfind_cmp("été", "xétéx", a));
    /* decomposed and precomposed forms are one (NFKD) */
    assert_true(mfind_cmp("e\xcc\x81t\xc3\xa9", "\xc3\x89te\xcc\x81", u));
    /* compatibility decompositions: circled digit, full-width letters, the "dz" digraphs'
     * titlecase (U+01C4..U+01C6 all become U+01C5 Dž) */
    assert_true(mfind_cmp("1", "\xe2\x91\xa0", u));
    assert_true(mfind_cmp("abc", "\xef\xbd\x81\xef\xbd\x82\xef\xbd\x83", u));
    assert_false(mfind_cmp("abc", "\xef\xbd\x81\xef\xbd\x82\xef\xbd\x83", a));
    assert_true(mfind_cmp("\xc7\x86", "\xc7\x84", u));
    /* long s and final sigma title-case to S and Σ */
    assert_true(mfind_cmp("\xc5\xbf", "S", u));
    assert_true(mfind_cmp("\xcf\x82", "\xce\xa3", u));
    /* a base letter is found in its accented form (substring of the decomposition), not
     * the other way round */
    assert_true(mfind_cmp("cafe", "CAFÉ", u));
    assert_false(mfind_cmp("café", "CAFE", u));
}

static void test_body_search_decoding(void **state)
{
    (void)state;
    const char *qp = "Content-Type: text/plain; charset=utf-8\n"
                     "Content-Transfer-Encoding: Quoted-Printable\n\n"
                     "Caf=C3=A9 soft=\nbreak =3D equals, trailing =  \nend =zz\n";
    assert_true(bfind("CAFÉ", qp));
    assert_true(bfind("softbreak", qp));
    assert_true(bfind("= equals", qp));
    assert_true(bfind("trailing end", qp));
    assert_true(bfind("=zz", qp));
    assert_false(bfind("C3", qp));
    const char *b64 = "Content-Type: text/plain; charset=iso-8859-1\n"
                      "Content-Transfer-Encoding: base64\n\n"
                      "x2EgY2/7\ndGUgY2hlciwgdHLocyBjaGVyLgo=\n";
    assert_true(bfind("ça coûte", b64));
    assert_true(bfind("TRÈS CHER", b64));
    const char *mp = "Content-Type: multipart/alternative; boundary=b\n\n"
                     "--b\nContent-Type: text/html\n\n<p>in html</p>\n"
                     "--b\nContent-Type: image/png\nContent-Transfer-Encoding: base64\n\n"
                     "aW1hZ2VieXRlcw==\n--b--\n";
    assert_true(bfind("in html", mp));
    assert_false(bfind("imagebytes", mp));
    /* the work cap stops the scan */
    struct mime_part *p = mime_parse(qp, strlen(qp));
    struct mime_matcher *m = mime_matcher_new("end", 3);
    assert_false(mime_body_search(qp, strlen(qp), p, m, 4));
    mime_matcher_free(m);
    mime_part_free(p);
}

static void test_header_search(void **state)
{
    (void)state;
    const char *h = "Subject: =?UTF-8?Q?caf=C3=A9?=\n folded\nX-Empty:\nTo: a@b\n\nbody";
    struct mime_matcher *m = mime_matcher_new("CAFÉ folded", 12);
    assert_true(mime_header_search(h, strlen(h), "subject", m, false));
    mime_matcher_reset(m);
    assert_false(mime_header_search(h, strlen(h), "to", m, false));
    mime_matcher_free(m);
    m = mime_matcher_new("", 0);
    assert_true(mime_header_search(h, strlen(h), "X-Empty", m, false));
    mime_matcher_reset(m);
    assert_false(mime_header_search(h, strlen(h), "Cc", m, false));
    mime_matcher_free(m);
    m = mime_matcher_new("to: a@b", 7);
    assert_true(mime_header_search(h, strlen(h), NULL, m, true));
    mime_matcher_free(m);
}

/* The preview text of a whole message (RFC 8970). */
static char *preview_of(const char *msg)
{
    struct mime_part *root = mime_parse(msg, strlen(msg));
    assert_non_null(root);
    struct buf b;
    buf_init(&b, 0);
    assert_true(mime_preview(msg, strlen(msg), root, &b));
    mime_part_free(root);
    char *r = buf_steal(&b);
    return r ? r : strdup("");
}

static void test_preview(void **state)
{
    (void)state;
    char *p = preview_of("Subject: x\n\nHello,\n\n  this   is\tthe text.\n");
    assert_string_equal(p, "Hello, this is the text.");
    free(p);
    /* the text/plain alternative; quoted-printable and a charset decoded */
    p = preview_of("Content-Type: multipart/alternative; boundary=b\n\n--b\n"
                   "Content-Type: text/html\n\n<p>html</p>\n--b\n"
                   "Content-Type: text/plain; charset=iso-8859-1\n"
                   "Content-Transfer-Encoding: quoted-printable\n\ncaf=E9 =\nau lait\n--b--\n");
    assert_string_equal(p, "caf\xc3\xa9 au lait");
    free(p);
    /* HTML only: tags, styles and entities */
    p = preview_of("Content-Type: text/html\n\n<html><style>p{x:1}</style><p>A &amp; B</p>"
                   "<br>c&lt;d</html>\n");
    assert_string_equal(p, "A & B c<d");
    free(p);
    /* no text at all (an attachment only): empty */
    p = preview_of("Content-Type: multipart/mixed; boundary=b\n\n--b\n"
                   "Content-Type: text/plain\nContent-Disposition: attachment\n\nsecret\n--b--\n");
    assert_string_equal(p, "");
    free(p);
    /* at most 256 characters, never cutting a UTF-8 character */
    struct buf big;
    buf_init(&big, 0);
    buf_append_str(&big, "Content-Type: text/plain; charset=utf-8\n\n");
    for (int i = 0; i < 300; i++)
        buf_append_str(&big, "\xc3\xa9");
    p = preview_of(big.data);
    assert_int_equal(strlen(p), 512);
    free(p);
    buf_free(&big);
}

static void test_binary(void **state)
{
    (void)state;
    struct buf out;
    buf_init(&out, 0);
    /* RFC 3516: base64 and quoted-printable undone (QP line-end padding removed) */
    /* lengths from the literals: a count past the end read the next bytes in memory
     * (other data under clang: test_binary failed in the clang and TSan builds) */
    static const char b64[] = "aGVs\r\nbG8=\r\n";
    assert_true(mime_decode_body(b64, sizeof b64 - 1, "BASE64", &out));
    assert_int_equal(out.len, 5);
    assert_memory_equal(out.data, "hello", 5);
    buf_reset(&out);
    static const char qp[] = "a=3Db  \r\nc=\r\nd";
    assert_true(mime_decode_body(qp, sizeof qp - 1, "quoted-printable", &out));
    assert_string_equal(out.data, "a=b\r\ncd");
    buf_reset(&out);
    assert_false(mime_decode_body("x", 1, "x-uuencode", &out));
    assert_int_equal(out.len, 0);
    /* a binary part holding NUL is turned into base64, the rest kept byte for byte */
    static const char msg[] = "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
                              "Content-Type: text/plain\r\n\r\nhi\r\n--b\r\n"
                              "Content-Type: application/octet-stream\r\n"
                              "Content-Transfer-Encoding: binary\r\n\r\n\0\1\2\r\n--b--\r\n";
    buf_reset(&out);
    assert_true(mime_binary_to_base64(msg, sizeof msg - 1, &out));
    assert_non_null(strstr(out.data, "Content-Transfer-Encoding: base64\r\n\r\nAAEC\r\n"));
    assert_non_null(strstr(out.data, "\r\n\r\nhi\r\n--b\r\n"));
    assert_null(memchr(out.data, '\0', out.len));
    assert_non_null(strstr(out.data, "--b--\r\n"));
    buf_reset(&out);
    static const char plain[] = "Subject: x\r\n\r\nno nul\r\n";
    assert_false(mime_binary_to_base64(plain, sizeof plain - 1, &out));
    buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_lf),
        cmocka_unit_test(test_crlf_same_as_lf),
        cmocka_unit_test(test_alternative),
        cmocka_unit_test(test_mixed_attachment),
        cmocka_unit_test(test_nested_rfc822),
        cmocka_unit_test(test_single_part_numbering),
        cmocka_unit_test(test_rfc2231),
        cmocka_unit_test(test_missing_content_type_and_encoded_words),
        cmocka_unit_test(test_eight_bit_literal),
        cmocka_unit_test(test_envelope_addresses),
        cmocka_unit_test(test_folded_header),
        cmocka_unit_test(test_header_filter),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_multipart_without_parts),
        cmocka_unit_test(test_digest_default),
        cmocka_unit_test(test_crlf_size),
        cmocka_unit_test(test_header_only_message),
        cmocka_unit_test(test_crlf_nested_offsets),
        cmocka_unit_test(test_field_limits_and_odd_lines),
        cmocka_unit_test(test_params_quoting_and_comments),
        cmocka_unit_test(test_many_parts_linear),
        cmocka_unit_test(test_rfc2047_decode),
        cmocka_unit_test(test_matcher_folding),
        cmocka_unit_test(test_matcher_random),
        cmocka_unit_test(test_matcher_comparators),
        cmocka_unit_test(test_body_search_decoding),
        cmocka_unit_test(test_header_search),
        cmocka_unit_test(test_preview),
        cmocka_unit_test(test_binary),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
