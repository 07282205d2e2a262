/*
 * server/counters.h - everything the server counts: what it received, what
 * it accepted, assembled and stored, and what it dropped and why.
 *
 * DESIGN. Counters are plain uint64_t fields owned by the I/O thread (the
 * only writer); the monitoring code that runs on the same loop reads them
 * directly. Values other threads produce (the consumer's) live in the store
 * and are read through its stats call. The groups are built so that counts
 * add up, and surge_counters_check() verifies it:
 *
 *   messages.received = messages.handled + sum(messages.dropped[*])
 *   slices.received   = slices.accepted + sum(slices.dropped[*])
 *   steps.started     = steps.assembled + sum(steps.dropped[*])
 *                       + steps.in_progress
 *   steps.assembled   = samples.train + samples.validation
 *                       + sum(samples.dropped[*]) + samples.pending
 *
 * A "slice" is one field of one rank for one step (an item of a data
 * message); a "step" is one (simulation, step) being assembled; a "sample"
 * is an assembled step on its way into a store.
 */
#ifndef SURGE_SERVER_COUNTERS_H
#define SURGE_SERVER_COUNTERS_H

#include <stdint.h>

/* Why a whole message was dropped (before looking at its slices). */
enum surge_msg_drop {
    SURGE_MDROP_HEADER_TOO_LARGE, /* first frame over the limit */
    SURGE_MDROP_BAD_HEADER,       /* not a valid protocol header */
    SURGE_MDROP_BAD_VERSION,      /* another protocol version */
    SURGE_MDROP_BAD_FRAMES,       /* wrong number of frames for its type */
    SURGE_MDROP_UNEXPECTED_TYPE,  /* a server->client type sent to us */
    SURGE_MDROP_HELLO_REJECTED,   /* hello answered with reject */
    SURGE_MDROP_CONTROL_REJECTED, /* control with a bad token or op */
    SURGE_MDROP_UNKNOWN_SESSION,  /* data/bye from a peer without hello */
    SURGE_MDROP_SESSION_MISMATCH, /* sim/rank differ from the peer's hello */
    SURGE_MDROP_BAD_DTYPE,        /* element type other than float32 */
    SURGE_MDROP_BAD_PAYLOAD_SIZE, /* payload frame size != items' sizes */
    SURGE_MDROP_BAD_FIELD,        /* item names an undeclared field */
    SURGE_MDROP_BAD_SLICE,        /* item offset/count != declared slice */
    SURGE_MDROP_PRESESSION_TOO_LARGE, /* over --max-presession-bytes from a
                                         peer without a session: dropped
                                         before decoding */
    SURGE_MDROP_WRONG_SERVER_RANK,    /* a step another server rank owns
                                         (server ranks, route by step) */
    SURGE_MDROP__COUNT
};

/* Why one slice of a well-formed data message was not used. A message
 * dropped whole (above) counts all its items here under the same name. */
enum surge_slice_drop {
    SURGE_SDROP_MESSAGE_DROPPED, /* its message was dropped whole */
    SURGE_SDROP_DUPLICATE,       /* this slice of this step already came */
    SURGE_SDROP_STEP_ASSEMBLED,  /* the step was assembled already (retry) */
    SURGE_SDROP_STEP_DROPPED,    /* the step's partial sample was dropped */
    SURGE_SDROP_ASSEMBLY_MEMORY, /* no assembly memory could be freed */
    SURGE_SDROP__COUNT
};

/* Why a partial step was dropped before it was complete. */
enum surge_step_drop {
    SURGE_TDROP_ASSEMBLY_MEMORY, /* oldest partial evicted for a new one */
    SURGE_TDROP_SIM_FAILED,      /* launcher said the sim failed */
    SURGE_TDROP_SIM_RETRY,       /* the sim was restarted */
    SURGE_TDROP_SIM_FINISHED,    /* all ranks said bye, step incomplete */
    SURGE_TDROP_SIM_TIMEOUT,     /* the sim was silent past its timeout */
    SURGE_TDROP_SERVER_STOP,     /* the server stopped */
    SURGE_TDROP_SIM_NOT_JOINED,  /* its sim's ranks never all joined */
    SURGE_TDROP__COUNT
};

/* Why an assembled sample did not enter a store. */
enum surge_sample_drop {
    SURGE_PDROP_VALIDATION_FULL,        /* the validation store is full */
    SURGE_PDROP_SERVER_STOP,            /* the server stopped before the put */
    SURGE_PDROP_VALIDATION_NOT_SAMPLED, /* a held-out run left out of the
                                           validation set (the store was
                                           full and reservoir sampling of
                                           whole runs did not pick it) */
    SURGE_PDROP__COUNT
};

typedef struct surge_counters {
    struct {
        uint64_t received;                    /* multipart messages */
        uint64_t bytes;                       /* all frames, bytes */
        uint64_t handled;                     /* processed, not dropped */
        uint64_t hello, data, bye, control;   /* by type (decoded) */
        uint64_t dropped[SURGE_MDROP__COUNT]; /* by reason */
    } messages;
    struct {
        uint64_t received; /* items of data messages with a valid header */
        uint64_t accepted; /* copied into a partial step */
        uint64_t bytes;    /* payload bytes accepted */
        uint64_t dropped[SURGE_SDROP__COUNT];
        uint64_t sent_by_clients; /* sum of the slice counts of the byes
                                     (what the ranks that closed cleanly
                                     say they sent) */
    } slices;
    struct {
        uint64_t started;     /* partial steps created */
        uint64_t assembled;   /* complete samples */
        uint64_t in_progress; /* partial steps alive now */
        uint64_t dropped[SURGE_TDROP__COUNT];
    } steps;
    struct {
        uint64_t train;              /* put into the training store */
        uint64_t validation;         /* put into the validation store */
        uint64_t validation_evicted; /* of those, removed later with their
                                        whole run to make room for
                                        another (reservoir sampling) */
        uint64_t pending;            /* assembled, waiting for store space */
        uint64_t dropped[SURGE_PDROP__COUNT];
    } samples;
    struct {
        uint64_t hello;                /* hellos answered with welcome */
        uint64_t redirected;           /* hellos answered with a welcome
                                          that sends the client to the
                                          sim's server rank (no session) */
        uint64_t rejected;             /* hellos answered with reject */
        uint64_t joined;               /* simulations whose ranks all joined */
        uint64_t finished;             /* all ranks said bye */
        uint64_t failed;               /* SIM_FAILED from the launcher */
        uint64_t timed_out;            /* silent past --sim-timeout */
        uint64_t not_joined;           /* ranks still missing past
                                          --join-timeout or at the end of
                                          reception */
        uint64_t retried;              /* SIM_RETRY from the launcher */
        uint64_t bye;                  /* byes answered */
        uint64_t validation_runs;      /* held-out runs that sent a sample */
        uint64_t validation_runs_kept; /* of those, in the validation set
                                          now */
    } sims;
    struct {
        uint64_t accepted;         /* connections accepted */
        uint64_t disconnected;     /* connections closed */
        uint64_t handshake_failed; /* ZMTP handshake failures */
        uint64_t curve_refused;    /* CURVE clients whose key the study
                                      does not hold (ZAP said no) */
        uint64_t refused;          /* connections cut: over
                                      --max-connections */
        uint64_t cut;              /* connections cut: a peer without a
                                      session kept sending large frames */
        uint64_t held;             /* messages of peers with a session
                                      read and held under backpressure */
        uint64_t replies_sent;     /* welcome/reject/ack/control reply */
        uint64_t replies_dropped;  /* peer gone or its queue full */
        uint64_t control_ok;       /* control requests performed */
        uint64_t read_pauses;      /* times reading stopped (store full) */
        uint64_t read_paused_ns;   /* time spent with reading stopped */
    } io;
} surge_counters;

/* Names for the reasons, as they appear in server-stats.json and logs. */
const char *surge_msg_drop_name(int reason);
const char *surge_slice_drop_name(int reason);
const char *surge_step_drop_name(int reason);
const char *surge_sample_drop_name(int reason);

/* surge_counters_check - 0 when the identities at the top of this file
 * hold; otherwise -1 and *what names the first that does not. */
int surge_counters_check(const surge_counters *c, const char **what);

#endif /* SURGE_SERVER_COUNTERS_H */
