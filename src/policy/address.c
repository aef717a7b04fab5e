/*
 * address.c - the client key of the policy tables (address.h).
 */
#include "policy/address.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

bool policy_address_key(const char *ip, char key[POLICY_KEY_SIZE])
{
    struct in6_addr a6;
    if (inet_pton(AF_INET6, ip, &a6) == 1) {
        if (IN6_IS_ADDR_V4MAPPED(&a6))
            return inet_ntop(AF_INET, &a6.s6_addr[12], key, POLICY_KEY_SIZE) != NULL;
        memset(&a6.s6_addr[8], 0, 8);
        char net[INET6_ADDRSTRLEN];
        if (!inet_ntop(AF_INET6, &a6, net, sizeof net))
            return false;
        int n = snprintf(key, POLICY_KEY_SIZE, "%s/64", net);
        return n > 0 && n < POLICY_KEY_SIZE;
    }
    int n = snprintf(key, POLICY_KEY_SIZE, "%s", ip);
    return n >= 0 && n < POLICY_KEY_SIZE;
}
