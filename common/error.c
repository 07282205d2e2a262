/* common/error.c - surge_strerror(): text for every surge error code. */
#include "config.h"

#include <string.h>

#include <surge/error.h>

const char *
surge_strerror(int code)
{
    switch (code) {
    case SURGE_OK:
        return "success";
    case SURGE_EPROTO:
        return "message does not follow the surge protocol";
    case SURGE_EVERSION:
        return "peer speaks another surge protocol version";
    case SURGE_ETOKEN:
        return "wrong study token";
    case SURGE_ETIMEDOUT:
        return "timed out waiting for the server";
    case SURGE_EREJECTED:
        return "server rejected this client";
    case SURGE_ELIMIT:
        return "size or count exceeds a protocol limit";
    case SURGE_EFIELD:
        return "unknown or wrongly declared field";
    case SURGE_EBOUNDS:
        return "offset and count fall outside the field";
    case SURGE_EDTYPE:
        return "element type not allowed";
    case SURGE_ESTATE:
        return "call not allowed in this state";
    case SURGE_ECONFIG:
        return "invalid configuration";
    case SURGE_ENOSERVER:
        return "no surge server answered at the endpoint";
    case SURGE_EDUPLICATE:
        return "already seen (duplicate step or client)";
    case SURGE_ECLOSED:
        return "shut down while waiting";
    case SURGE_EINTERNAL:
        return "internal error in surge (please report it)";
    default:
        break;
    }
    if (code < 0 && code > -4096) {
        /* strerror() is not thread-safe in general, but glibc's returns
         * static strings for known errno values. */
        return strerror(-code);
    }
    return "unknown error";
}
