/*
 * tests/fuzz/fuzz_protocol.c - libFuzzer harness for the protocol decoder
 * (common/protocol.c): any header frame a peer can send.
 *
 * Properties checked beyond "no crash, no sanitizer report":
 *  - a decoded message re-encodes (the encoder accepts everything the
 *    decoder accepts, protocol.h) and the re-encoding decodes again;
 *  - encoding is a fixed point: encode(decode(encode(m))) is byte for byte
 *    encode(m) (nothing the decoder keeps is lost or changed);
 *  - a failure always names its rule (*why set).
 * A broken property aborts, which libFuzzer reports as a crash.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <surge/error.h>

#include "common/protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
fail(const char *what, const char *why)
{
    fprintf(stderr, "fuzz_protocol: %s (%s)\n", what, why ? why : "-");
    abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Static: a surge_msg is ~60 KiB, too much for a fuzzer's stack. */
    static surge_msg m, m2;
    static unsigned char enc[SURGE_MAX_HEADER_BYTES],
        enc2[SURGE_MAX_HEADER_BYTES];
    const char *why = NULL;
    int rc = surge_proto_decode(data, size, &m, &why);
    if (rc != 0) {
        if (rc >= 0 || why == NULL || why[0] == '\0') {
            fail("a refused frame must give a negative code and a reason", why);
        }
        return 0;
    }
    int n = surge_proto_encode(&m, enc, sizeof enc);
    if (n <= 0) {
        fail("the encoder refused a message the decoder accepted",
             surge_strerror(n));
    }
    rc = surge_proto_decode(enc, (size_t)n, &m2, &why);
    if (rc != 0) {
        fail("a re-encoded message does not decode", why);
    }
    int n2 = surge_proto_encode(&m2, enc2, sizeof enc2);
    if (n2 != n || memcmp(enc, enc2, (size_t)n) != 0) {
        fail("encode(decode(encode(m))) differs from encode(m)", NULL);
    }
    if (m.type == SURGE_MSG_DATA) {
        uint64_t bytes = 0;
        (void)surge_proto_payload_bytes(&m.u.data, &bytes);
    }
    return 0;
}
