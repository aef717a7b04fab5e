/*
 * fuzz_smtp_command.c - libFuzzer target for the SMTP command parser (smtp/parse.c):
 * the input is one command line; every parser that could see it runs over it.
 */
#include "smtp/parse.h"

#include <assert.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *line = (const char *)data;
    if (size > SMTP_AUTH_LINE_MAX)
        size = SMTP_AUTH_LINE_MAX; /* the session never hands over longer lines */
    struct smtp_command cmd;
    if (!smtp_command_parse(line, size, &cmd))
        return 0;
    assert(cmd.arg >= line && cmd.arg + cmd.arg_len <= line + size);
    (void)smtp_verb_stat_name(cmd.verb);

    char reply[SMTP_REPLY_MAX];
    struct addr a;
    struct smtp_mail_params p;
    if (smtp_parse_mail(cmd.arg, cmd.arg_len, 1000, &a, &p, reply, sizeof reply)) {
        assert(strlen(a.local) < sizeof a.local && strlen(a.domain) < sizeof a.domain);
        assert(!p.has_size || p.size <= 1000);
    } else {
        assert(strlen(reply) >= 4 && (reply[0] == '5' || reply[0] == '4'));
    }
    if (!smtp_parse_rcpt(cmd.arg, cmd.arg_len, &a, reply, sizeof reply))
        assert(reply[0] == '5');
    /* RFC 3461 parameters (NOTIFY=, ORCPT= with xtext) */
    struct smtp_rcpt_params rp;
    if (smtp_parse_rcpt_dsn(cmd.arg, cmd.arg_len, &a, &rp, reply, sizeof reply)) {
        assert(strlen(rp.orcpt) <= SMTP_DSN_ORCPT_MAX);
        assert(!(rp.notify & 8) || rp.notify == 8); /* NEVER stands alone */
    } else {
        assert(reply[0] == '5');
    }
    if (smtp_parse_mail(cmd.arg, cmd.arg_len, 0, &a, &p, reply, sizeof reply))
        assert(strlen(p.envid) <= SMTP_DSN_ENVID_MAX && p.dsn_ret >= 0 && p.dsn_ret <= 2);
    uint64_t n;
    bool last;
    (void)smtp_parse_bdat(cmd.arg, cmd.arg_len, &n, &last);
    const char *url;
    size_t url_len;
    if (smtp_parse_burl(cmd.arg, cmd.arg_len, &url, &url_len, &last))
        assert(url == cmd.arg && url_len >= 1 && url_len <= cmd.arg_len);
    char mech[21];
    const char *ir;
    size_t irlen;
    if (smtp_parse_auth(cmd.arg, cmd.arg_len, mech, &ir, &irlen)) {
        assert(strlen(mech) >= 1 && strlen(mech) <= 20);
        assert(!ir || (ir >= cmd.arg && ir + irlen <= cmd.arg + cmd.arg_len));
    }
    char helo[256];
    if (smtp_parse_helo(cmd.arg, cmd.arg_len, helo, sizeof helo))
        assert(strlen(helo) <= 255);
    struct smtp_xclient x;
    if (smtp_parse_xclient(cmd.arg, cmd.arg_len, &x, reply, sizeof reply))
        assert(strlen(x.addr) < sizeof x.addr && strlen(x.login) <= 320 && x.proto <= 2);
    else
        assert(reply[0] == '5');
    return 0;
}
