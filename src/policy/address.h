/*
 * address.h - the client key the policy tables count against (penalty.h, ratelimit.h).
 *
 * IPv4: the address. IPv6: the /64 it lies in (one link, RFC 4291 §2.5.4, and the least
 * a customer is given, RFC 6177: whoever holds one IPv6 address can use 2^64 more, so
 * counting per address would never catch them). An IPv4-mapped IPv6 address
 * (::ffff:a.b.c.d) is the IPv4 client. Anything else ("unknown") is its own key.
 * Thread rules: none (pure).
 */
#ifndef TERN_POLICY_ADDRESS_H
#define TERN_POLICY_ADDRESS_H

#include <stdbool.h>

#define POLICY_KEY_SIZE 48 /* "a.b.c.d" or "xxxx:xxxx:xxxx:xxxx::/64" */

/* false: too long to be a key. */
bool policy_address_key(const char *ip, char key[POLICY_KEY_SIZE]);

#endif
