! tests/integration/fortran_errors.F90 - the Fortran module's error paths
! and its checked send, built twice: with `use mpi` (fortran_errors) and
! with `include 'mpif.h'` (fortran_errors_mpifh), the flavours the module
! must serve besides mpi_f08 (surge-advdiff1d). One rank. Without
! SURGE_ENDPOINT only the checks that need no server run; with a server
! (fortran_study.sh starts one) also: a wrong element count and a
! non-contiguous section are refused with their message, and a correct
! send and close succeed. Prints "pass NAME" or "FAIL NAME: detail" per
! check; exits 1 when any failed.
program fortran_errors
#ifdef USE_MPIF_H
    use surge
    implicit none
    include 'mpif.h'
#else
    use mpi
    use surge
    implicit none
#endif
    type(surge_client) :: c
    type(surge_field) :: f(1)
    integer :: ierr, nfail
    character(len=512) :: msg
    real(8), target :: u8(8)
    real(4) :: u4(4)
    character(len=64) :: ep

    nfail = 0
    call MPI_Init(ierr)
    u8 = 1.5d0
    u4 = 2.5

    call surge_send(c, 'u', 1, 0.0d0, u4, ierr)
    call surge_error_message(msg)
    call expect('send on a closed client', ierr == SURGE_ESTATE .and. &
                index(msg, 'not open') > 0)

    call surge_strerror(SURGE_ETIMEDOUT, msg)
    call expect('surge_strerror', len_trim(msg) > 0)

    f(1) = surge_field('u', 4, 0, 4)
    call surge_open(c, f(1:0), MPI_COMM_WORLD, ierr, &
                    endpoint='tcp://127.0.0.1:1')
    call surge_error_message(msg)
    call expect('open with no field', ierr == SURGE_ECONFIG .and. &
                index(msg, 'fields') > 0)

    call surge_open(c, f, MPI_COMM_WORLD, ierr, &
                    endpoint='tcp://127.0.0.1:1', timeout_ms=300)
    call surge_error_message(msg)
    call expect('open with no server', ierr == SURGE_ENOSERVER .and. &
                index(msg, 'tcp://127.0.0.1:1') > 0)

    f(1) = surge_field(repeat('x', 65), 4, 0, 4)
    call surge_open(c, f, MPI_COMM_WORLD, ierr, &
                    endpoint='tcp://127.0.0.1:1', timeout_ms=300)
    call surge_error_message(msg)
    call expect('name over 64 characters', ierr == SURGE_EFIELD .and. &
                index(msg, 'not 1..64 characters') > 0)
    f(1) = surge_field('u', 4, 0, 4)

    call get_environment_variable('SURGE_ENDPOINT', ep)
    if (len_trim(ep) > 0) then
        call surge_open(c, f, MPI_COMM_WORLD, ierr)
        call surge_error_message(msg)
        call expect('open', ierr == SURGE_OK)
        call surge_send(c, 'u', 1, 0.1d0, u8(1:5), ierr)
        call surge_error_message(msg)
        call expect('wrong element count', ierr == SURGE_EBOUNDS .and. &
                    index(msg, 'has 5 elements; this rank declared 4') > 0)
        call surge_send(c, 'u', 1, 0.1d0, u8(1:8:2), ierr)
        call surge_error_message(msg)
        call expect('non-contiguous section', ierr /= SURGE_OK .and. &
                    index(msg, 'not contiguous') > 0)
        call surge_send(c, 'v', 1, 0.1d0, u4, ierr)
        call surge_error_message(msg)
        call expect('undeclared field', ierr == SURGE_EFIELD .and. &
                    index(msg, '"v"') > 0)
        call surge_send(c, 'u', 1, 0.1d0, u4, ierr)
        call expect('send real(4)', ierr == SURGE_OK)
        call surge_send(c, 'u', 2, 0.2d0, u8(1:4), ierr)
        call expect('send real(8)', ierr == SURGE_OK)
        call surge_send(c, 'u', 2, 0.2d0, u8(1:4), ierr)
        call expect('duplicate step', ierr == SURGE_EDUPLICATE)
        call surge_close(c, ierr)
        call surge_error_message(msg)
        call expect('close', ierr == SURGE_OK)
    end if

    deallocate(f(1)%name) ! main-program variables are never freed
    call MPI_Finalize(ierr)
    if (nfail > 0) stop 1

contains

    subroutine expect(name, cond)
        character(len=*), intent(in) :: name
        logical, intent(in) :: cond
        if (cond) then
            print '(2a)', 'pass ', name
        else
            print '(4a,i0)', 'FAIL ', name, ': ', trim(msg), ierr
            nfail = nfail + 1
        end if
    end subroutine expect

end program fortran_errors
