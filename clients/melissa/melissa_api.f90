! melissa_api.f90 - Melissa's Fortran client API, served by surge
! (libsurge_melissa). Include it where Melissa's is included, next to
! mpif.h:
!
!     include 'mpif.h'
!     include 'melissa_api.f90'
!     ...
!     call melissa_init('temperature'//char(0), local_size, MPI_COMM_WORLD)
!     call melissa_send('temperature'//char(0), u)
!     call melissa_finalize()
!
! As with Melissa, field names are NUL-terminated by the caller (//char(0));
! a name without its NUL within 64 characters is refused with a message.
! The communicator is a Fortran handle (mpif.h or `use mpi`; with mpi_f08
! pass comm%MPI_VAL). See melissa_api.h for what each call does in surge.
interface

subroutine melissa_init(field_name, local_vect_size, comm) &
        bind(c, name='melissa_init_f')
    use iso_c_binding, only: c_int, c_char
    character(kind=c_char), dimension(*) :: field_name
    integer(kind=c_int) :: local_vect_size
    integer(kind=c_int) :: comm
end subroutine melissa_init

subroutine melissa_send(field_name, send_vect) bind(c, name='melissa_send')
    use iso_c_binding, only: c_double, c_char
    character(kind=c_char), dimension(*) :: field_name
    real(kind=c_double), dimension(*) :: send_vect
end subroutine melissa_send

subroutine melissa_send_with_metadata(field_name, send_vect, metadata_json) &
        bind(c, name='melissa_send_with_metadata')
    use iso_c_binding, only: c_double, c_char
    character(kind=c_char), dimension(*) :: field_name
    real(kind=c_double), dimension(*) :: send_vect
    character(kind=c_char), dimension(*) :: metadata_json
end subroutine melissa_send_with_metadata

subroutine melissa_finalize() bind(c, name='melissa_finalize')
end subroutine melissa_finalize

end interface
