! solvers/melissa/heat1d.f90 - heat1d-melissa-f: the 1D heat equation of
! heat1d.c in Fortran, instrumented for Melissa the way its documentation
! tells Fortran users to: include 'mpif.h' together with
! include 'melissa_api.f90', NUL-terminated field names, melissa_init /
! melissa_send per step / melissa_finalize before MPI_Finalize. Built
! against surge's libsurge_melissa by changing only the flags.
!
! Usage (the study's parameters last): heat1d-melissa-f NX NSTEPS T0 TL TR
! One field, "temperature"; the gradient of heat1d.c is left out.
program heat1d_melissa
    implicit none
    include 'mpif.h'
    include 'melissa_api.f90'

    integer :: ierr, rank, nranks, nx, nsteps, n, i, step, left, right, st
    double precision :: t0, tl, tr, dx, dt
    double precision, allocatable :: u(:), un(:)
    character(len=64) :: arg
    character(len=12), parameter :: field = 'temperature' // char(0)
    integer :: status(MPI_STATUS_SIZE)

    call MPI_Init(ierr)
    call MPI_Comm_rank(MPI_COMM_WORLD, rank, ierr)
    call MPI_Comm_size(MPI_COMM_WORLD, nranks, ierr)

    st = 0
    if (command_argument_count() /= 5) st = 1
    if (st == 0) call int_arg(1, nx)
    if (st == 0) call int_arg(2, nsteps)
    if (st == 0) call real_arg(3, t0)
    if (st == 0) call real_arg(4, tl)
    if (st == 0) call real_arg(5, tr)
    if (st /= 0 .or. nx < nranks .or. nsteps < 1) then
        if (rank == 0) write (0, '(a)') &
            'usage: heat1d-melissa-f NX NSTEPS T0 TL TR (NX >= ranks)'
        call MPI_Finalize(ierr)
        stop 2
    end if

    n = nx / nranks
    if (rank < mod(nx, nranks)) n = n + 1
    allocate(u(0:n + 1), un(n))
    u = t0
    left = rank - 1
    if (rank == 0) left = MPI_PROC_NULL
    right = rank + 1
    if (rank == nranks - 1) right = MPI_PROC_NULL
    dx = 1d0 / (nx + 1)
    dt = 0.4d0 * dx * dx

    call melissa_init(field, n, MPI_COMM_WORLD)

    do step = 1, nsteps
        u(0) = tl
        u(n + 1) = tr
        call MPI_Sendrecv(u(n), 1, MPI_DOUBLE_PRECISION, right, 0, &
                          u(0), 1, MPI_DOUBLE_PRECISION, left, 0, &
                          MPI_COMM_WORLD, status, ierr)
        call MPI_Sendrecv(u(1), 1, MPI_DOUBLE_PRECISION, left, 1, &
                          u(n + 1), 1, MPI_DOUBLE_PRECISION, right, 1, &
                          MPI_COMM_WORLD, status, ierr)
        do i = 1, n
            un(i) = u(i) + dt / (dx * dx) * (u(i - 1) - 2 * u(i) + u(i + 1))
        end do
        u(1:n) = un
        call melissa_send(field, u(1:n))
    end do

    call melissa_finalize()
    deallocate(u, un)
    call MPI_Finalize(ierr)

contains

    subroutine int_arg(k, v)
        integer, intent(in) :: k
        integer, intent(out) :: v
        call get_command_argument(k, arg)
        read (arg, *, iostat=st) v
    end subroutine int_arg

    subroutine real_arg(k, v)
        integer, intent(in) :: k
        double precision, intent(out) :: v
        call get_command_argument(k, arg)
        read (arg, *, iostat=st) v
    end subroutine real_arg

end program heat1d_melissa
