/*
 * melissa_api.h - Melissa's client API, served by surge (libsurge_melissa).
 *
 * A solver instrumented for Melissa (https://melissa.gitlabpages.inria.fr)
 * builds against this header and library by changing only its include and
 * link flags (pkg-config surge-melissa), and runs in a `surge launch` study
 * unchanged. The calls keep Melissa's published signatures and usage:
 *
 *     MPI_Init(&argc, &argv);
 *     melissa_init("temperature", local_size, MPI_COMM_WORLD);  // per field
 *     for (t = 0; t < nsteps; t++) {
 *         ... compute ...
 *         melissa_send("temperature", u);    // once per field per step
 *     }
 *     melissa_finalize();                    // before MPI_Finalize
 *
 * How Melissa's notions map to surge (docs/melissa.md has the details):
 * - melissa_init is collective over comm: each rank declares its local
 *   slice; the field's global size is the sum over the ranks and a rank's
 *   offset the sum over the ranks before it (rank order of comm). All
 *   fields are declared before the first melissa_send, as in Melissa.
 * - Each melissa_send of a field is the next step of that field, counted
 *   per field from 0; the step number is also the sample's time input.
 *   One sample is (simulation, step) with every field, so every field is
 *   sent the same number of times.
 * - The simulation id is SURGE_SIM_ID (set by surge launch), else
 *   MELISSA_SIMU_ID; the parameter values are SURGE_PARAMS; the server is
 *   SURGE_ENDPOINT, the credential SURGE_RUN_KEY (surge launch) or
 *   SURGE_TOKEN (by hand), and SURGE_CURVE_KEYS for encrypted studies.
 * - These calls return nothing, as in Melissa; a failure (no server, a
 *   rejected client, a wrong call order) prints one line naming it on
 *   stderr and ends the run with MPI_Abort(comm, 1), so the launcher sees
 *   a failed run and retries it. Nothing is dropped silently.
 * Threads: one thread of each process calls these functions.
 */
#ifndef MELISSA_API_H
#define MELISSA_API_H

#include <mpi.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define MELISSA_SURGE_API __attribute__((visibility("default")))
#else
#define MELISSA_SURGE_API
#endif

/* melissa_init - declare a field this rank holds local_vect_size doubles
 * of (0 allowed). Collective over comm; every field uses the same comm. */
MELISSA_SURGE_API void melissa_init(const char *field_name,
                                    const int local_vect_size, MPI_Comm comm);

/* melissa_init_f - melissa_init for Fortran (melissa_api.f90 binds it as
 * melissa_init): comm is a Fortran communicator handle. */
MELISSA_SURGE_API void melissa_init_f(const char *field_name,
                                      int *local_vect_size, MPI_Fint *comm);

/* melissa_send - this rank's local_vect_size values of the field for its
 * next step (sent as float32, rounded to nearest). */
MELISSA_SURGE_API void melissa_send(const char *field_name,
                                    const double *send_vect);

/* melissa_send_with_metadata - melissa_send with Melissa's JSON metadata.
 * metadata_json must be a JSON object; a numeric "time" member becomes the
 * sample's time input instead of the step number (the one piece of
 * metadata that has a meaning in a surge sample); other members are
 * accepted and not used. */
MELISSA_SURGE_API void melissa_send_with_metadata(const char *field_name,
                                                  const double *send_vect,
                                                  const char *metadata_json);

/* melissa_finalize - flush, tell the server this rank is done and wait for
 * it to confirm every slice. Call it before MPI_Finalize. */
MELISSA_SURGE_API void melissa_finalize(void);

#ifdef __cplusplus
}
#endif
#endif /* MELISSA_API_H */
