! solvers/advdiff1d/advdiff1d.f90 - surge-advdiff1d: the 1D periodic
! advection-diffusion equation, MPI-parallel, in Fortran with `use mpi_f08`,
! streaming two fields to surge through the Fortran module `surge`.
!
!     u_t + a u_x = nu u_xx   on [0, 1), periodic,
!     u(x, 0) = A exp(-((x - 0.5) / 0.1)^2)
!
! Parameters (from `surge launch` through SURGE_PARAMS, or --params):
! a (velocity), nu (diffusivity), A (amplitude). Finite volumes on nx
! cells: first-order upwind advection, centred diffusion, explicit Euler;
! dt = 0.4 min(dx / |a|, dx^2 / (2 nu)), stable for both terms. The ranks
! own contiguous blocks of cells and exchange one halo cell each side with
! MPI_Sendrecv every step (periodic neighbours).
!
! Sent per step n = 1..steps (time n dt): "u" (real(8): libsurge rounds it
! to float32) and "flux" (real(4)), the numerical flux a u - nu u_x at each
! cell's left face. The scheme is conservative, so sum(u) dx is constant to
! rounding: rank 0 prints its relative drift at the end ("mass drift"), a
! check of the numerics. --checksums PREFIX writes PREFIX.<rank>: one line
! "step ck_u ck_flux" per step, libsurge's checksums of what this rank sent
! (tests compare them with the server's).
!
! Every failure is agreed on by all ranks (one MPI_Allreduce per step), so
! they stop together with exit status 1 and nobody waits in a collective.
! Usage: surge-advdiff1d [--nx N] [--steps N] [--params a,nu,A]
!                        [--checksums PREFIX]
program advdiff1d
    use mpi_f08
    use surge
    use, intrinsic :: iso_fortran_env, only: int64, real32, real64, &
        error_unit
    implicit none

    integer :: nx = 256, nsteps = 20
    character(len=1024) :: ckprefix = ''
    real(real64) :: params(3), a, nu, amp, dx, dt, mass0, mass, drift
    logical :: have_params = .false.
    integer :: rank, nranks, left, right, nloc, ierr, ok, step, i, np
    integer(int64) :: off, sim
    real(real64), allocatable :: u(:), unew(:), x(:)
    real(real32), allocatable :: flux(:)
    type(surge_client) :: client
    type(surge_field) :: fields(2)
    character(len=512) :: msg
    integer :: ckunit

    call MPI_Init()
    call MPI_Comm_rank(MPI_COMM_WORLD, rank)
    call MPI_Comm_size(MPI_COMM_WORLD, nranks)
    call parse_args()

    ! Parameters: --params wins, else what surge launch passed.
    ok = 1
    if (.not. have_params) then
        call surge_get_params(params, np, sim, ierr)
        if (ierr /= SURGE_OK) then
            call surge_error_message(msg)
            call log('ERROR', trim(msg))
            ok = 0
        else if (np /= 3) then
            write (msg, '(a,i0,a)') 'SURGE_PARAMS has ', np, &
                ' value(s); advdiff1d needs 3: velocity,diffusivity,amplitude'
            call log('ERROR', trim(msg))
            ok = 0
        end if
    end if
    if (.not. all_ok(ok)) call finish(1)
    a = params(1)
    nu = params(2)
    amp = params(3)
    if (nu <= 0 .or. abs(a) + nu == 0 .or. nx < nranks) then
        if (rank == 0) call log('ERROR', 'need diffusivity > 0 and nx >= ranks')
        call finish(2)
    end if

    ! This rank's block of cells: [off, off + nloc), balanced.
    nloc = nx / nranks
    off = int(rank, int64) * nloc + min(rank, mod(nx, nranks))
    if (rank < mod(nx, nranks)) nloc = nloc + 1
    left = modulo(rank - 1, nranks)
    right = modulo(rank + 1, nranks)
    dx = 1.0_real64 / nx
    dt = 0.4_real64 * min(dx / max(abs(a), tiny(a)), dx * dx / (2 * nu))

    allocate(u(0:nloc + 1), unew(nloc), x(nloc), flux(nloc))
    do i = 1, nloc
        x(i) = (off + i - 0.5_real64) * dx
        u(i) = amp * exp(-((x(i) - 0.5_real64) / 0.1_real64)**2)
    end do
    mass0 = global_sum(sum(u(1:nloc)) * dx)

    fields(1) = surge_field('u', nx, off, nloc)
    fields(2) = surge_field('flux', nx, off, nloc)
    call surge_open(client, fields, MPI_COMM_WORLD%MPI_VAL, ierr)
    ok = check(ierr, 'surge_open')
    if (.not. all_ok(ok)) call finish(1)

    if (len_trim(ckprefix) > 0) then
        write (msg, '(a,a,i0)') trim(ckprefix), '.', rank
        open (newunit=ckunit, file=trim(msg), action='write', &
              status='replace', iostat=ierr)
        if (ierr /= 0) then
            call log('ERROR', 'cannot write ' // trim(msg))
            ok = 0
        end if
    end if
    if (.not. all_ok(ok)) call abort_run()

    do step = 1, nsteps
        call halo()
        do i = 1, nloc
            unew(i) = u(i) - dt / dx * (face(i + 1) - face(i))
        end do
        u(1:nloc) = unew
        ! The flux sent is the one at the new time level, consistent with u.
        call halo()
        do i = 1, nloc
            flux(i) = real(face(i), real32)
        end do
        call surge_send(client, 'u', step, step * dt, u(1:nloc), ierr)
        ok = check(ierr, 'surge_send u')
        if (ok == 1) then
            call surge_send(client, 'flux', step, step * dt, flux, ierr)
            ok = check(ierr, 'surge_send flux')
        end if
        if (ok == 1 .and. len_trim(ckprefix) > 0) then
            write (ckunit, '(i0,1x,i0,1x,i0)') step, &
                surge_checksum(u(1:nloc), off), &
                surge_checksum(flux, int(nx, int64) + off)
        end if
        if (.not. all_ok(ok)) call abort_run()
    end do
    if (len_trim(ckprefix) > 0) close (ckunit)

    call surge_close(client, ierr)
    ok = check(ierr, 'surge_close')
    mass = global_sum(sum(u(1:nloc)) * dx)
    drift = abs(mass - mass0) / abs(mass0)
    if (rank == 0) then
        write (msg, '(a,es10.3,a,i0,a,i0,a)') 'mass drift ', drift, &
            ' after ', nsteps, ' steps on ', nranks, ' ranks'
        call log('INFO', trim(msg))
    end if
    if (.not. all_ok(ok)) call finish(1)
    call finish(0)

contains

    ! Numerical flux at the left face of cell i, from the halo-filled u.
    real(real64) function face(i)
        integer, intent(in) :: i
        face = max(a, 0.0_real64) * u(i - 1) + min(a, 0.0_real64) * u(i) &
               - nu * (u(i) - u(i - 1)) / dx
    end function face

    ! Fill u(0) from the left neighbour and u(nloc+1) from the right one.
    subroutine halo()
        call MPI_Sendrecv(u(nloc), 1, MPI_DOUBLE_PRECISION, right, 0, &
                          u(0), 1, MPI_DOUBLE_PRECISION, left, 0, &
                          MPI_COMM_WORLD, MPI_STATUS_IGNORE)
        call MPI_Sendrecv(u(1), 1, MPI_DOUBLE_PRECISION, left, 1, &
                          u(nloc + 1), 1, MPI_DOUBLE_PRECISION, right, 1, &
                          MPI_COMM_WORLD, MPI_STATUS_IGNORE)
    end subroutine halo

    real(real64) function global_sum(v)
        real(real64), intent(in) :: v
        call MPI_Allreduce(v, global_sum, 1, MPI_DOUBLE_PRECISION, MPI_SUM, &
                           MPI_COMM_WORLD)
    end function global_sum

    logical function all_ok(mine)
        integer, intent(in) :: mine
        integer :: every
        call MPI_Allreduce(mine, every, 1, MPI_INTEGER, MPI_MIN, &
                           MPI_COMM_WORLD)
        all_ok = every == 1
    end function all_ok

    ! 1 when ierr is SURGE_OK, else 0 after logging the detail.
    integer function check(code, what)
        integer, intent(in) :: code
        character(len=*), intent(in) :: what
        character(len=512) :: detail
        check = 1
        if (code /= SURGE_OK) then
            call surge_error_message(detail)
            call log('ERROR', what // ': ' // trim(detail))
            check = 0
        end if
    end function check

    subroutine abort_run()
        call surge_abort(client)
        call finish(1)
    end subroutine abort_run

    ! The main program's arrays are never freed by the runtime (they are
    ! implicitly saved): free them so a leak checker sees a clean exit.
    subroutine finish(status)
        integer, intent(in) :: status
        if (allocated(u)) deallocate(u, unew, x, flux)
        if (allocated(fields(1)%name)) deallocate(fields(1)%name)
        if (allocated(fields(2)%name)) deallocate(fields(2)%name)
        call MPI_Finalize()
        if (status /= 0) error stop status, quiet=.true.
        stop
    end subroutine finish

    ! One line "time level advdiff1d[rank] text" on stderr.
    subroutine log(level, text)
        character(len=*), intent(in) :: level, text
        integer :: v(8)
        call date_and_time(values=v)
        write (error_unit, '(i4.4,"-",i2.2,"-",i2.2,"T",i2.2,":",i2.2,":",' &
               // 'i2.2,".",i3.3,1x,a,1x,a,i0,a,1x,a)') v(1), v(2), v(3), &
               v(5), v(6), v(7), v(8), level, 'advdiff1d[', rank, ']', text
        flush (error_unit)
    end subroutine log

    subroutine parse_args()
        character(len=1024) :: arg, val
        integer :: k, n, st
        k = 1
        n = command_argument_count()
        do while (k <= n)
            call get_command_argument(k, arg)
            if (k + 1 > n) call usage('missing value after ' // trim(arg))
            call get_command_argument(k + 1, val)
            select case (trim(arg))
            case ('--nx')
                read (val, *, iostat=st) nx
                if (st /= 0 .or. nx < 2) call usage('--nx: an integer >= 2')
            case ('--steps')
                read (val, *, iostat=st) nsteps
                if (st /= 0 .or. nsteps < 1) &
                    call usage('--steps: an integer >= 1')
            case ('--params')
                read (val, *, iostat=st) params
                if (st /= 0) call usage('--params: three numbers a,nu,A')
                have_params = .true.
            case ('--checksums')
                ckprefix = val
            case default
                call usage('unknown option ' // trim(arg))
            end select
            k = k + 2
        end do
    end subroutine parse_args

    subroutine usage(why)
        character(len=*), intent(in) :: why
        if (rank == 0) then
            call log('ERROR', why)
            write (error_unit, '(a)') 'usage: surge-advdiff1d [--nx N] ' // &
                '[--steps N] [--params a,nu,A] [--checksums PREFIX]'
        end if
        call finish(2)
    end subroutine usage

end program advdiff1d
