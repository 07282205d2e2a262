! clients/fortran/surge.f90 - the Fortran module `surge`: libsurge for
! Fortran solvers (ISO_C_BINDING; the C half is clients/fortran/glue.c).
!
!     use surge
!     type(surge_client) :: c
!     type(surge_field) :: f(1)
!     integer :: ierr
!     f(1) = surge_field('u', n_global, my_offset, my_count)
!     call surge_open(c, f, MPI_COMM_WORLD, ierr)    ! mpif.h / use mpi
!     ! use mpi_f08: call surge_open(c, f, comm%MPI_VAL, ierr)
!     do step = 1, nsteps
!        ...
!        call surge_send(c, 'u', step, step * dt, u, ierr)  ! real(4)/(8)
!     end do
!     call surge_close(c, ierr)
!     if (ierr /= SURGE_OK) then
!        call surge_error_message(msg); print *, trim(msg)
!     end if
!
! DESIGN. The module never depends on an MPI module: the communicator is
! its Fortran handle (an integer), converted with MPI_Comm_f2c in C, so the
! same surge.mod serves programs built with `use mpi`, `use mpi_f08` or
! `include 'mpif.h'`. Arrays are passed by address (c_loc of their first
! element): real(4) and real(8) arrays of rank 1 to 3 are sent without a
! copy in the binding (libsurge rounds real(8) to float32 as it packs them,
! as for C callers). A non-contiguous array section is refused rather than
! copied. surge_send also checks that the array holds exactly the count
! this rank declared for the field, which a C caller cannot be told.
!
! Errors: every routine returns ierr = SURGE_OK (0) or a negative code
! (the SURGE_E* parameters below, or a negated errno);
! surge_error_message gives the detail of the last failure on this thread
! and surge_strerror the text of any code. Nothing blocks longer than the
! client's timeout (SURGE_TIMEOUT_MS, default 30 s).
module surge
    use, intrinsic :: iso_c_binding
    use, intrinsic :: iso_fortran_env, only: int64
    implicit none
    private

    ! Codes of include/surge/error.h (the values are part of the ABI).
    integer, parameter, public :: SURGE_OK = 0
    integer, parameter, public :: SURGE_EPROTO = -1000
    integer, parameter, public :: SURGE_EVERSION = -1001
    integer, parameter, public :: SURGE_ETOKEN = -1002
    integer, parameter, public :: SURGE_ETIMEDOUT = -1003
    integer, parameter, public :: SURGE_EREJECTED = -1004
    integer, parameter, public :: SURGE_ELIMIT = -1005
    integer, parameter, public :: SURGE_EFIELD = -1006
    integer, parameter, public :: SURGE_EBOUNDS = -1007
    integer, parameter, public :: SURGE_EDTYPE = -1008
    integer, parameter, public :: SURGE_ESTATE = -1009
    integer, parameter, public :: SURGE_ECONFIG = -1010
    integer, parameter, public :: SURGE_ENOSERVER = -1011
    integer, parameter, public :: SURGE_EDUPLICATE = -1012
    integer, parameter, public :: SURGE_ECLOSED = -1013
    integer, parameter, public :: SURGE_EINTERNAL = -1014

    ! Longest field name (bytes), as in the wire protocol.
    integer, parameter, public :: SURGE_NAME_LEN = 64

    integer(c_int), parameter :: DT_F32 = 1, DT_F64 = 2
    integer, parameter :: SLOT = SURGE_NAME_LEN + 1

    ! surge_field - one field this rank holds a slice of: the field is a
    ! flat array of global_size elements (Fortran order of the solver's
    ! array), this rank owns elements offset+1 .. offset+count (offset is
    ! 0-based, as on the wire). Same meaning as struct surge_field in C.
    ! The name is as long as given, so that surge_open can refuse a name
    ! over SURGE_NAME_LEN characters instead of a silent cut.
    type, public :: surge_field
        character(len=:), allocatable :: name
        integer(int64) :: global_size = 0
        integer(int64) :: offset = 0
        integer(int64) :: count = 0
    end type surge_field

    ! surge_client - an open client (one per rank). Components are private;
    ! a client that was never opened, or was closed, holds nothing.
    type, public :: surge_client
        private
        type(c_ptr) :: handle = c_null_ptr
        character(len=SURGE_NAME_LEN), allocatable :: names(:)
        integer(int64), allocatable :: counts(:)
    end type surge_client

    public :: surge_open, surge_send, surge_flush, surge_close, surge_abort
    public :: surge_error_message, surge_strerror, surge_get_params
    public :: surge_checksum

    ! surge_send(client, field, step, time, data, ierr): this rank's slice
    ! of one field for one step. data: real(4) or real(8), rank 1..3,
    ! contiguous, exactly the count declared for the field. step >= 0; time
    ! (real(8)) is the simulated time, an input of the sample.
    interface surge_send
        module procedure send_r4_1, send_r4_2, send_r4_3
        module procedure send_r8_1, send_r8_2, send_r8_3
    end interface surge_send

    ! surge_checksum(data, position): libsurge's order-independent checksum
    ! of a slice (see surge_checksum_f32 in surge/client.h); position is
    ! the 0-based index of data's first element in the sample's output.
    interface surge_checksum
        module procedure ck_r4_1, ck_r8_1
    end interface surge_checksum

    interface
        subroutine c_set_error(text) bind(c, name='surge_f_set_error')
            import :: c_char
            character(kind=c_char), intent(in) :: text(*)
        end subroutine c_set_error
        subroutine c_error(buf, len) bind(c, name='surge_f_error')
            import :: c_char, c_int
            character(kind=c_char), intent(out) :: buf(*)
            integer(c_int), value :: len
        end subroutine c_error
        subroutine c_strerror(code, buf, len) bind(c, name='surge_f_strerror')
            import :: c_char, c_int
            integer(c_int), value :: code
            character(kind=c_char), intent(out) :: buf(*)
            integer(c_int), value :: len
        end subroutine c_strerror
        function c_params(values, cap, n, sim_id) result(rc) &
                bind(c, name='surge_f_params')
            import :: c_int, c_double, c_int64_t
            real(c_double), intent(out) :: values(*)
            integer(c_int), value :: cap
            integer(c_int), intent(out) :: n
            integer(c_int64_t), intent(out) :: sim_id
            integer(c_int) :: rc
        end function c_params
        function c_open(out, comm, nfields, names, global_size, offset, &
                count, endpoint, token, sim_id, params, nparams, &
                timeout_ms) result(rc) bind(c, name='surge_f_open')
            import :: c_ptr, c_int, c_char, c_int64_t, c_double
            type(c_ptr), intent(out) :: out
            integer(c_int), value :: comm, nfields
            character(kind=c_char), intent(in) :: names(*)
            integer(c_int64_t), intent(in) :: global_size(*), offset(*)
            integer(c_int64_t), intent(in) :: count(*)
            character(kind=c_char), intent(in) :: endpoint(*), token(*)
            integer(c_int64_t), value :: sim_id
            real(c_double), intent(in) :: params(*)
            integer(c_int), value :: nparams, timeout_ms
            integer(c_int) :: rc
        end function c_open
        function c_send(c, field, step, time, data, dtype) result(rc) &
                bind(c, name='surge_f_send')
            import :: c_ptr, c_char, c_int64_t, c_double, c_int
            type(c_ptr), value :: c
            character(kind=c_char), intent(in) :: field(*)
            integer(c_int64_t), value :: step
            real(c_double), value :: time
            type(c_ptr), value :: data
            integer(c_int), value :: dtype
            integer(c_int) :: rc
        end function c_send
        function c_flush(c) result(rc) bind(c, name='surge_f_flush')
            import :: c_ptr, c_int
            type(c_ptr), value :: c
            integer(c_int) :: rc
        end function c_flush
        function c_close(c) result(rc) bind(c, name='surge_f_close')
            import :: c_ptr, c_int
            type(c_ptr), intent(inout) :: c
            integer(c_int) :: rc
        end function c_close
        subroutine c_abort(c) bind(c, name='surge_f_abort')
            import :: c_ptr
            type(c_ptr), intent(inout) :: c
        end subroutine c_abort
        function c_ck32(v, position, count) result(ck) &
                bind(c, name='surge_checksum_f32')
            import :: c_float, c_int64_t
            real(c_float), intent(in) :: v(*)
            integer(c_int64_t), value :: position, count
            integer(c_int64_t) :: ck
        end function c_ck32
        function c_ck64(v, position, count) result(ck) &
                bind(c, name='surge_checksum_f64')
            import :: c_double, c_int64_t
            real(c_double), intent(in) :: v(*)
            integer(c_int64_t), value :: position, count
            integer(c_int64_t) :: ck
        end function c_ck64
    end interface

contains

    ! A Fortran string as a NUL-terminated C string, trailing blanks cut.
    pure function cstr(s) result(r)
        character(len=*), intent(in) :: s
        character(kind=c_char, len=len_trim(s) + 1) :: r
        r = trim(s) // c_null_char
    end function cstr

    subroutine set_error(text)
        character(len=*), intent(in) :: text
        call c_set_error(cstr(text))
    end subroutine set_error

    ! surge_open(client, fields, comm, ierr [, endpoint, token, sim_id,
    ! params, timeout_ms]): connect this rank to the server and declare its
    ! fields; comm is the simulation's communicator as a Fortran handle
    ! (MPI_COMM_WORLD, or comm%MPI_VAL with mpi_f08), used for rank and
    ! size. The optional arguments override what the launcher passed in the
    ! environment (SURGE_ENDPOINT, SURGE_TOKEN, SURGE_SIM_ID, SURGE_PARAMS,
    ! SURGE_TIMEOUT_MS). On failure the client stays closed.
    subroutine surge_open(client, fields, comm, ierr, endpoint, token, &
            sim_id, params, timeout_ms)
        type(surge_client), intent(inout) :: client
        type(surge_field), intent(in) :: fields(:)
        integer, intent(in) :: comm
        integer, intent(out) :: ierr
        character(len=*), intent(in), optional :: endpoint, token
        integer(int64), intent(in), optional :: sim_id
        real(c_double), intent(in), optional :: params(:)
        integer, intent(in), optional :: timeout_ms
        character(kind=c_char), allocatable :: names(:)
        integer(c_int64_t), allocatable :: gs(:), off(:), cnt(:)
        real(c_double) :: noparams(1)
        integer(c_int64_t) :: sid
        integer(c_int) :: np, tmo
        integer :: i, j, n
        type(c_ptr) :: h

        if (c_associated(client%handle)) then
            call set_error('surge_open: this client is already open')
            ierr = SURGE_ESTATE
            return
        end if
        n = size(fields)
        allocate(names(SLOT * max(n, 1)), gs(max(n, 1)), off(max(n, 1)), &
                 cnt(max(n, 1)))
        names = c_null_char
        do i = 1, n
            if (.not. allocated(fields(i)%name)) then
                call set_error('surge_open: a field has no name')
                ierr = SURGE_EFIELD
                return
            end if
            if (len_trim(fields(i)%name) == 0 .or. &
                    len_trim(fields(i)%name) > SURGE_NAME_LEN) then
                call set_error('surge_open: field name "' // &
                    trim(fields(i)%name) // '" is not 1..64 characters')
                ierr = SURGE_EFIELD
                return
            end if
            do j = 1, len_trim(fields(i)%name)
                names((i - 1) * SLOT + j) = fields(i)%name(j:j)
            end do
            gs(i) = fields(i)%global_size
            off(i) = fields(i)%offset
            cnt(i) = fields(i)%count
        end do
        sid = -1
        if (present(sim_id)) sid = sim_id
        tmo = 0
        if (present(timeout_ms)) tmo = timeout_ms
        noparams = 0
        h = c_null_ptr
        if (present(params)) then
            np = size(params)
            if (np > 0) then
                ierr = open_call(params)
            else
                ierr = open_call(noparams)
            end if
        else
            np = -1
            ierr = open_call(noparams)
        end if
        if (ierr /= SURGE_OK) return
        client%handle = h
        allocate(client%names(n), client%counts(n))
        do i = 1, n
            client%names(i) = fields(i)%name
            client%counts(i) = fields(i)%count
        end do
    contains
        integer function open_call(p)
            real(c_double), intent(in) :: p(:)
            if (present(endpoint) .and. present(token)) then
                open_call = c_open(h, int(comm, c_int), int(n, c_int), names, &
                    gs, off, cnt, cstr(endpoint), cstr(token), sid, p, np, tmo)
            else if (present(endpoint)) then
                open_call = c_open(h, int(comm, c_int), int(n, c_int), names, &
                    gs, off, cnt, cstr(endpoint), c_null_char, sid, p, np, tmo)
            else if (present(token)) then
                open_call = c_open(h, int(comm, c_int), int(n, c_int), names, &
                    gs, off, cnt, c_null_char, cstr(token), sid, p, np, tmo)
            else
                open_call = c_open(h, int(comm, c_int), int(n, c_int), names, &
                    gs, off, cnt, c_null_char, c_null_char, sid, p, np, tmo)
            end if
        end function open_call
    end subroutine surge_open

    ! The checks every surge_send does before handing the address to C:
    ! open client, contiguous array, and the element count this rank
    ! declared for the field (an unknown field is left to libsurge, which
    ! names it).
    integer function check_send(client, field, n, contiguous)
        type(surge_client), intent(in) :: client
        character(len=*), intent(in) :: field
        integer(int64), intent(in) :: n
        logical, intent(in) :: contiguous
        character(len=256) :: msg
        integer :: i
        check_send = SURGE_OK
        if (.not. c_associated(client%handle)) then
            call set_error('surge_send: the client is not open')
            check_send = SURGE_ESTATE
            return
        end if
        if (.not. contiguous) then
            write (msg, '(3a)') 'field "', trim(field), '": the array is not &
                &contiguous (surge_send never copies: pass a contiguous array)'
            call set_error(msg)
            check_send = -22 ! -EINVAL
            return
        end if
        do i = 1, size(client%names)
            if (client%names(i) == field) then
                if (client%counts(i) /= n) then
                    write (msg, '(3a,i0,a,i0)') 'field "', trim(field), &
                        '": the array has ', n, &
                        ' elements; this rank declared ', client%counts(i)
                    call set_error(msg)
                    check_send = SURGE_EBOUNDS
                end if
                return
            end if
        end do
    end function check_send

    integer function send_ptr(client, field, step, time, p, dtype)
        type(surge_client), intent(in) :: client
        character(len=*), intent(in) :: field
        integer, intent(in) :: step
        real(c_double), intent(in) :: time
        type(c_ptr), intent(in) :: p
        integer(c_int), intent(in) :: dtype
        send_ptr = c_send(client%handle, cstr(field), &
                          int(step, c_int64_t), time, p, dtype)
    end function send_ptr

    subroutine send_r4_1(client, field, step, time, data, ierr)
        type(surge_client), intent(inout) :: client
        character(len=*), intent(in) :: field
        integer, intent(in) :: step
        real(c_double), intent(in) :: time
        real(c_float), intent(in), target :: data(:)
        integer, intent(out) :: ierr
        ierr = check_send(client, field, size(data, kind=int64), &
                          is_contiguous(data))
        if (ierr /= SURGE_OK) return
        if (size(data) == 0) then
            ierr = send_ptr(client, field, step, time, c_null_ptr, DT_F32)
        else
            ierr = send_ptr(client, field, step, time, c_loc(data(1)), &
                            DT_F32)
        end if
    end subroutine send_r4_1

    subroutine send_r4_2(client, field, step, time, data, ierr)
        type(surge_client), intent(inout) :: client
        character(len=*), intent(in) :: field
        integer, intent(in) :: step
        real(c_double), intent(in) :: time
        real(c_float), intent(in), target :: data(:,:)
        integer, intent(out) :: ierr
        ierr = check_send(client, field, size(data, kind=int64), &
                          is_contiguous(data))
        if (ierr /= SURGE_OK) return
        if (size(data) == 0) then
            ierr = send_ptr(client, field, step, time, c_null_ptr, DT_F32)
        else
            ierr = send_ptr(client, field, step, time, c_loc(data(1,1)), &
                            DT_F32)
        end if
    end subroutine send_r4_2

    subroutine send_r4_3(client, field, step, time, data, ierr)
        type(surge_client), intent(inout) :: client
        character(len=*), intent(in) :: field
        integer, intent(in) :: step
        real(c_double), intent(in) :: time
        real(c_float), intent(in), target :: data(:,:,:)
        integer, intent(out) :: ierr
        ierr = check_send(client, field, size(data, kind=int64), &
                          is_contiguous(data))
        if (ierr /= SURGE_OK) return
        if (size(data) == 0) then
            ierr = send_ptr(client, field, step, time, c_null_ptr, DT_F32)
        else
            ierr = send_ptr(client, field, step, time, c_loc(data(1,1,1)), &
                            DT_F32)
        end if
    end subroutine send_r4_3

    subroutine send_r8_1(client, field, step, time, data, ierr)
        type(surge_client), intent(inout) :: client
        character(len=*), intent(in) :: field
        integer, intent(in) :: step
        real(c_double), intent(in) :: time
        real(c_double), intent(in), target :: data(:)
        integer, intent(out) :: ierr
        ierr = check_send(client, field, size(data, kind=int64), &
                          is_contiguous(data))
        if (ierr /= SURGE_OK) return
        if (size(data) == 0) then
            ierr = send_ptr(client, field, step, time, c_null_ptr, DT_F64)
        else
            ierr = send_ptr(client, field, step, time, c_loc(data(1)), &
                            DT_F64)
        end if
    end subroutine send_r8_1

    subroutine send_r8_2(client, field, step, time, data, ierr)
        type(surge_client), intent(inout) :: client
        character(len=*), intent(in) :: field
        integer, intent(in) :: step
        real(c_double), intent(in) :: time
        real(c_double), intent(in), target :: data(:,:)
        integer, intent(out) :: ierr
        ierr = check_send(client, field, size(data, kind=int64), &
                          is_contiguous(data))
        if (ierr /= SURGE_OK) return
        if (size(data) == 0) then
            ierr = send_ptr(client, field, step, time, c_null_ptr, DT_F64)
        else
            ierr = send_ptr(client, field, step, time, c_loc(data(1,1)), &
                            DT_F64)
        end if
    end subroutine send_r8_2

    subroutine send_r8_3(client, field, step, time, data, ierr)
        type(surge_client), intent(inout) :: client
        character(len=*), intent(in) :: field
        integer, intent(in) :: step
        real(c_double), intent(in) :: time
        real(c_double), intent(in), target :: data(:,:,:)
        integer, intent(out) :: ierr
        ierr = check_send(client, field, size(data, kind=int64), &
                          is_contiguous(data))
        if (ierr /= SURGE_OK) return
        if (size(data) == 0) then
            ierr = send_ptr(client, field, step, time, c_null_ptr, DT_F64)
        else
            ierr = send_ptr(client, field, step, time, c_loc(data(1,1,1)), &
                            DT_F64)
        end if
    end subroutine send_r8_3

    ! surge_flush(client, ierr): send any packed slices now.
    subroutine surge_flush(client, ierr)
        type(surge_client), intent(inout) :: client
        integer, intent(out) :: ierr
        ierr = c_flush(client%handle)
    end subroutine surge_flush

    ! surge_close(client, ierr): flush, say bye, wait for the server to
    ! confirm every slice; the client is closed afterwards, also on error.
    ! Closing a client that is not open does nothing.
    subroutine surge_close(client, ierr)
        type(surge_client), intent(inout) :: client
        integer, intent(out) :: ierr
        ierr = c_close(client%handle)
        client%handle = c_null_ptr
        if (allocated(client%names)) deallocate(client%names)
        if (allocated(client%counts)) deallocate(client%counts)
    end subroutine surge_close

    ! surge_abort(client): close without bye (the server counts this rank's
    ! unfinished steps as dropped).
    subroutine surge_abort(client)
        type(surge_client), intent(inout) :: client
        call c_abort(client%handle)
        client%handle = c_null_ptr
        if (allocated(client%names)) deallocate(client%names)
        if (allocated(client%counts)) deallocate(client%counts)
    end subroutine surge_abort

    ! surge_error_message(msg): the detail of the last failure on this
    ! thread ("no surge server answered at tcp://... within 1000 ms"),
    ! blank-padded or cut to len(msg).
    subroutine surge_error_message(msg)
        character(len=*), intent(out) :: msg
        call c_error(msg, int(len(msg), c_int))
    end subroutine surge_error_message

    ! surge_strerror(code, msg): the text of any code a routine returned.
    subroutine surge_strerror(code, msg)
        integer, intent(in) :: code
        character(len=*), intent(out) :: msg
        call c_strerror(int(code, c_int), msg, int(len(msg), c_int))
    end subroutine surge_strerror

    ! surge_get_params(params, n, sim_id, ierr): the parameter values and
    ! simulation id `surge launch` gave this run (SURGE_PARAMS,
    ! SURGE_SIM_ID). n is their number; SURGE_ELIMIT when params is too
    ! small to hold them all.
    subroutine surge_get_params(params, n, sim_id, ierr)
        real(c_double), intent(out) :: params(:)
        integer, intent(out) :: n
        integer(int64), intent(out) :: sim_id
        integer, intent(out) :: ierr
        integer(c_int) :: cn
        integer(c_int64_t) :: sid
        real(c_double) :: dummy(1)
        if (size(params) > 0) then
            ierr = c_params(params, int(size(params), c_int), cn, sid)
        else
            ierr = c_params(dummy, 0_c_int, cn, sid)
        end if
        n = cn
        sim_id = sid
    end subroutine surge_get_params

    function ck_r4_1(data, position) result(ck)
        real(c_float), intent(in) :: data(:)
        integer(int64), intent(in) :: position
        integer(int64) :: ck
        ck = c_ck32(data, position, size(data, kind=int64))
    end function ck_r4_1

    function ck_r8_1(data, position) result(ck)
        real(c_double), intent(in) :: data(:)
        integer(int64), intent(in) :: position
        integer(int64) :: ck
        ck = c_ck64(data, position, size(data, kind=int64))
    end function ck_r8_1

end module surge
