/*
 * surge/error.h - error codes shared by every surge library and program.
 *
 * Every library call returns 0 on success or a negative code: either one of
 * the SURGE_E* values below or a negated errno (-ENOMEM, -EINVAL, ...).
 * surge_strerror() turns any of them into a sentence a person understands.
 */
#ifndef SURGE_ERROR_H
#define SURGE_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

/* SURGE_API marks the symbols libsurge exports; everything else is hidden
 * (the libraries are built with -fvisibility=hidden). */
#if defined(__GNUC__)
#define SURGE_API __attribute__((visibility("default")))
#else
#define SURGE_API
#endif

/* Our own codes sit far below any errno so the two never collide. */
enum surge_error {
    SURGE_OK = 0,
    SURGE_EPROTO = -1000,     /* a message broke the wire protocol */
    SURGE_EVERSION = -1001,   /* peer speaks another protocol version */
    SURGE_ETOKEN = -1002,     /* wrong study token */
    SURGE_ETIMEDOUT = -1003,  /* no answer within the configured timeout */
    SURGE_EREJECTED = -1004,  /* the server refused this client (see detail) */
    SURGE_ELIMIT = -1005,     /* a size or count exceeds a protocol limit */
    SURGE_EFIELD = -1006,     /* unknown field, or a field declared wrongly */
    SURGE_EBOUNDS = -1007,    /* offset + count outside the field */
    SURGE_EDTYPE = -1008,     /* element type not allowed */
    SURGE_ESTATE = -1009,     /* call not allowed in this state */
    SURGE_ECONFIG = -1010,    /* invalid configuration (see detail) */
    SURGE_ENOSERVER = -1011,  /* no server answered at the endpoint */
    SURGE_EDUPLICATE = -1012, /* a step or client that was already seen */
    SURGE_ECLOSED = -1013,    /* the object was shut down while waiting */
    SURGE_EINTERNAL = -1014   /* a bug in surge: please report it */
};

/* surge_strerror - the text for any code returned by a surge call (SURGE_E*
 * or -errno). Never returns NULL; the string is static. Thread-safe. */
SURGE_API const char *surge_strerror(int code);

#ifdef __cplusplus
}
#endif
#endif /* SURGE_ERROR_H */
