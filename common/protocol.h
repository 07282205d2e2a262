/*
 * common/protocol.h - the surge wire protocol, version 1: message structs,
 * limits and the msgpack codec. docs/protocol.md is the prose spec; this
 * header and that page must agree.
 *
 * DESIGN. Every message is a ZeroMQ multipart message whose first frame is a
 * msgpack map (the header) and whose other frames are raw little-endian
 * payloads. Headers always carry "v" (protocol version) and "type". Keys are
 * short strings so that a peer in any language can speak the protocol with
 * a stock msgpack library.
 *
 * The codec validates everything it can without session state: types of
 * every value, string lengths, counts against the limits below, required
 * keys present, no unknown type. It decodes into fixed-size structs (no
 * allocation on the decode path besides msgpack's zone, which the caller
 * may reuse) so that a hostile header can never make the server allocate
 * more than SURGE_MAX_HEADER_BYTES. Checks that need session state (is this
 * field declared, does offset+count match the hello, does the payload size
 * match) belong to the server.
 *
 * Thread-safety: the functions are reentrant; a surge_proto_decoder is used
 * by one thread at a time.
 */
#ifndef SURGE_COMMON_PROTOCOL_H
#define SURGE_COMMON_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#include <surge/error.h>

#define SURGE_PROTOCOL_VERSION 1

/* Limits. A message that exceeds one is rejected before anything is
 * allocated for it. */
#define SURGE_MAX_HEADER_BYTES 16384 /* first frame */
#define SURGE_MAX_NAME 64            /* field names, bytes */
#define SURGE_MAX_TOKEN 128          /* study token, bytes */
#define SURGE_MAX_RUN_KEY 64         /* hello.run_key, bytes (64 hex) */
#define SURGE_MAX_REASON 256         /* reject / reply text, bytes */
#define SURGE_MAX_PARAMS 64          /* parameters per simulation */
#define SURGE_MAX_FIELDS 64          /* fields per simulation */
#define SURGE_MAX_RANKS 65536        /* ranks per simulation */
#define SURGE_MAX_ITEMS 256          /* slices packed in one data msg */
#define SURGE_MAX_FIELD_ELEMS (UINT64_C(1) << 30)   /* elements per field */
#define SURGE_MAX_PAYLOAD_BYTES (UINT64_C(1) << 31) /* one data message */
#define SURGE_MAX_STEPS                                                        \
    (UINT64_C(1) << 53) /* hello.steps (exact in a double) */

/* Wire element types. v1 carries float32 only; the code exists so that a
 * later version can add others and a v1 server rejects them by name. */
enum surge_wire_dtype { SURGE_WIRE_F32 = 1 };

enum surge_msg_type {
    SURGE_MSG_HELLO = 1,    /* client rank -> server */
    SURGE_MSG_WELCOME,      /* server -> client rank */
    SURGE_MSG_REJECT,       /* server -> client rank (or control peer) */
    SURGE_MSG_DATA,         /* client rank -> server, + 1 payload frame */
    SURGE_MSG_BYE,          /* client rank -> server */
    SURGE_MSG_BYE_ACK,      /* server -> client rank */
    SURGE_MSG_CONTROL,      /* launcher -> server */
    SURGE_MSG_CONTROL_REPLY /* server -> launcher */
};

/* Control operations the launcher may ask for. */
enum surge_control_op {
    SURGE_CTL_PING = 1,      /* liveness check; reply carries counters */
    SURGE_CTL_SIM_FAILED,    /* sim failed: drop its incomplete steps */
    SURGE_CTL_SIM_RETRY,     /* sim restarts: accept a new hello, keep
                                ignoring steps already assembled */
    SURGE_CTL_END_RECEPTION, /* no more simulations will come */
    SURGE_CTL_SHUTDOWN       /* stop the server now */
};

typedef struct surge_field_desc {
    char name[SURGE_MAX_NAME + 1]; /* NUL-terminated */
    uint64_t global_size;          /* elements, 1..SURGE_MAX_FIELD_ELEMS */
    uint64_t offset;               /* this rank's first element */
    uint64_t count;                /* this rank's elements; offset+count
                                      <= global_size (checked by decode) */
} surge_field_desc;

typedef struct surge_msg_hello {
    char token[SURGE_MAX_TOKEN + 1];
    int64_t sim;      /* >= 0 */
    uint32_t rank;    /* < nranks */
    uint32_t nranks;  /* 1..SURGE_MAX_RANKS */
    uint32_t nparams; /* 0..SURGE_MAX_PARAMS */
    double params[SURGE_MAX_PARAMS];
    uint32_t nfields; /* 1..SURGE_MAX_FIELDS */
    surge_field_desc fields[SURGE_MAX_FIELDS];
    uint8_t dtype;  /* enum surge_wire_dtype */
    uint64_t steps; /* optional "steps": steps the run will send, for
                       progress and ETA; 0 = unknown (key absent) */

    /* The run's key (common/auth.h), optional on the wire ("" when
     * absent); the token above is no longer a hello's credential. */
    char run_key[SURGE_MAX_RUN_KEY + 1];
} surge_msg_hello;

/* A server of several ranks (docs/protocol.md, "Server ranks"). */
#define SURGE_MAX_SERVER_RANKS 1024 /* endpoints in one welcome */
#define SURGE_MAX_ENDPOINT 255      /* bytes of one endpoint */
enum surge_route {
    SURGE_ROUTE_STEP = 0, /* step s goes to server rank s % R */
    SURGE_ROUTE_SIM = 1   /* every step of sim goes to rank sim % R */
};

typedef struct surge_msg_welcome {
    int64_t sim;
    uint32_t rank;
    uint64_t max_payload_bytes; /* largest data message accepted */
    /* Present only from a server of R > 1 ranks (nservers 0: the keys are
     * absent, a server of one rank, today's welcome). */
    uint32_t nservers;      /* R: 0, or 2..SURGE_MAX_SERVER_RANKS */
    uint32_t server_rank;   /* which of them answered, < nservers */
    uint8_t route;          /* enum surge_route */
    uint8_t redirect;       /* 1: no session was opened by this hello; say
                               hello to the rank the route names instead */
    uint32_t endpoints_len; /* bytes used in endpoints */
    /* nservers endpoints, each NUL-terminated, back to back, in rank
     * order; each 1..SURGE_MAX_ENDPOINT bytes of tcp:// or ipc://, no
     * two equal (checked by the codec). */
    char endpoints[SURGE_MAX_HEADER_BYTES];
} surge_msg_welcome;

/* surge_proto_welcome_endpoint - the i-th endpoint of w (i < nservers),
 * or NULL. */
const char *surge_proto_welcome_endpoint(const surge_msg_welcome *w,
                                         uint32_t i);
/* surge_proto_welcome_add_endpoint - append ep to w's list (server side).
 * 0, or SURGE_ELIMIT when the list is full or ep too long. */
int surge_proto_welcome_add_endpoint(surge_msg_welcome *w, const char *ep);

typedef struct surge_msg_reject {
    int32_t code;                      /* a SURGE_E* code */
    char reason[SURGE_MAX_REASON + 1]; /* for a person */
} surge_msg_reject;

/* One field slice of one step inside a data message. Its elements follow in
 * the payload frame, item after item, in the order listed. */
typedef struct surge_data_item {
    int64_t step;    /* >= 0 */
    double time;     /* simulated time */
    uint32_t field;  /* index in the hello's fields */
    uint64_t offset; /* must equal the declared slice */
    uint64_t count;  /* >= 1: a rank whose slice of a
                        field is empty sends nothing */
} surge_data_item;

typedef struct surge_msg_data {
    int64_t sim;
    uint32_t rank;
    uint8_t dtype;   /* enum surge_wire_dtype */
    uint32_t nitems; /* 1..SURGE_MAX_ITEMS */
    surge_data_item items[SURGE_MAX_ITEMS];
} surge_msg_data;

typedef struct surge_msg_bye {
    int64_t sim;
    uint32_t rank;
    uint64_t slices; /* field slices this rank sent */
} surge_msg_bye;

typedef struct surge_msg_bye_ack {
    int64_t sim;
    uint32_t rank;
    uint64_t slices; /* slices the server accepted */
} surge_msg_bye_ack;

typedef struct surge_msg_control {
    char token[SURGE_MAX_TOKEN + 1];
    uint8_t op;  /* enum surge_control_op */
    int64_t sim; /* for SIM_*; -1 otherwise */
} surge_msg_control;

typedef struct surge_msg_control_reply {
    int32_t code; /* 0 or SURGE_E* */
    char message[SURGE_MAX_REASON + 1];
} surge_msg_control_reply;

typedef struct surge_msg {
    enum surge_msg_type type;
    union {
        surge_msg_hello hello;
        surge_msg_welcome welcome;
        surge_msg_reject reject;
        surge_msg_data data;
        surge_msg_bye bye;
        surge_msg_bye_ack bye_ack;
        surge_msg_control control;
        surge_msg_control_reply control_reply;
    } u;
} surge_msg;

/* surge_proto_encode - write m's header as msgpack into buf (capacity cap
 * bytes). On success returns the number of bytes written (> 0). Returns
 * SURGE_ELIMIT when it does not fit, or the code decode would return when
 * m breaks a rule (SURGE_EPROTO, SURGE_ELIMIT, SURGE_EDTYPE,
 * SURGE_EBOUNDS): an encoder never produces what a decoder would refuse.
 * Never allocates. A data header of SURGE_MAX_ITEMS items within the
 * limits always fits in SURGE_MAX_HEADER_BYTES. */
int surge_proto_encode(const surge_msg *m, void *buf, size_t cap);

/* surge_proto_decode - parse and validate a header frame into *m. Returns 0
 * or a negative code: SURGE_ELIMIT (len > SURGE_MAX_HEADER_BYTES, a string
 * longer than its limit, or a count over a limit), SURGE_EVERSION (v !=
 * SURGE_PROTOCOL_VERSION; checked before anything else in the map),
 * SURGE_EDTYPE (dtype other than "f32"), SURGE_EBOUNDS (a slice outside
 * its field: hello offset+count > size, data offset+count > 2^30),
 * SURGE_EPROTO (not msgpack, not a map, a key that is not a string or
 * appears twice, missing or mistyped key, value out of range, unknown type
 * or control op, trailing bytes). Keys this version does not know are
 * skipped, whatever their value (forward compatibility). Decoding never
 * allocates: lengths read from the frame are checked against the bytes
 * left before use. When why is not NULL, *why is set to a text naming the
 * offending key and rule ("data.items[].count: must be >= 1"); it lives in
 * a thread-local buffer valid until this thread's next encode/decode call.
 * On failure m->type is the message's type when the header got as far as
 * naming a known one (so a server can answer a hello it refuses), else 0;
 * the rest of *m is unspecified. */
int surge_proto_decode(const void *buf, size_t len, surge_msg *m,
                       const char **why);

/* surge_proto_type_name - "hello", "data", ...; "unknown" otherwise. */
const char *surge_proto_type_name(int type);

/* surge_proto_payload_bytes - bytes the payload frame of a data message must
 * hold: sum of item counts times the element size. Returns 0 and sets *bytes,
 * or SURGE_ELIMIT when it exceeds SURGE_MAX_PAYLOAD_BYTES. */
int surge_proto_payload_bytes(const surge_msg_data *d, uint64_t *bytes);

/* surge_proto_valid_name - 1 when s is a valid field name (1..64 bytes of
 * [A-Za-z0-9_.-]), 0 otherwise. */
int surge_proto_valid_name(const char *s);

#endif /* SURGE_COMMON_PROTOCOL_H */
