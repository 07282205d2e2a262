/*
 * tests/integration/py_layout.c - prints, as JSON, the size and member
 * offsets of the structures python/surge/client.py mirrors with ctypes,
 * so python_study.sh can check the mirror against this header's layout.
 */
#include <stddef.h>
#include <stdio.h>

#include <surge/client.h>

#define M(type, member) printf(", \"%s\": %zu", #member, offsetof(type, member))

int
main(void)
{
    printf("{\"surge_field\": {\"sizeof\": %zu", sizeof(surge_field));
    M(surge_field, name);
    M(surge_field, global_size);
    M(surge_field, offset);
    M(surge_field, count);
    printf("}, \"surge_client_options\": {\"sizeof\": %zu",
           sizeof(surge_client_options));
    M(surge_client_options, endpoint);
    M(surge_client_options, token);
    M(surge_client_options, sim_id);
    M(surge_client_options, rank);
    M(surge_client_options, nranks);
    M(surge_client_options, params);
    M(surge_client_options, nparams);
    M(surge_client_options, fields);
    M(surge_client_options, nfields);
    M(surge_client_options, timeout_ms);
    M(surge_client_options, coalesce_bytes);
    M(surge_client_options, flush_ms);
    M(surge_client_options, sndhwm_bytes);
    M(surge_client_options, steps);
    M(surge_client_options, run_key);
    M(surge_client_options, curve_keys);
    printf("}}\n");
    return 0;
}
