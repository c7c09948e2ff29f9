# Runs at install time (cmake --install, cpack): installs what must name the
# final paths, which are known only then (cmake --install --prefix P, or
# cpack's /usr under DESTDIR):
#   - the systemd units, with the programs' directory filled in, into
#     PREFIX/lib/systemd/system;
#   - the packaged sagad.cfg and the example saga, into SYSCONFDIR/saga,
#     where SYSCONFDIR is /etc for the /usr prefix (as GNUInstallDirs has it)
#     and PREFIX/etc otherwise. An existing file there is never overwritten:
#     it is the operator's.
# Set by packaging/CMakeLists.txt: SAGA_PKG_SOURCE_DIR, SAGA_PKG_BINARY_DIR,
# SAGA_PKG_SAGAS_DIR, SAGA_PKG_BINDIR (relative to the prefix).
set(prefix "${CMAKE_INSTALL_PREFIX}")
if(prefix STREQUAL "/usr")
  set(SAGA_SYSCONFDIR "/etc")
else()
  set(SAGA_SYSCONFDIR "${prefix}/etc")
endif()
set(SAGA_BINDIR "${prefix}/${SAGA_PKG_BINDIR}")

foreach(unit sagad.service saga-participant@.service)
  configure_file("${SAGA_PKG_SOURCE_DIR}/systemd/${unit}.in"
                 "${SAGA_PKG_BINARY_DIR}/units/${unit}" @ONLY)
endforeach()
file(INSTALL "${SAGA_PKG_BINARY_DIR}/units/sagad.service"
             "${SAGA_PKG_BINARY_DIR}/units/saga-participant@.service"
     DESTINATION "${prefix}/lib/systemd/system" FILE_PERMISSIONS OWNER_READ OWNER_WRITE
     GROUP_READ WORLD_READ)

set(confdir "${SAGA_SYSCONFDIR}/saga")
if(NOT EXISTS "$ENV{DESTDIR}${confdir}/sagad.cfg")
  file(INSTALL "${SAGA_PKG_SOURCE_DIR}/sagad.cfg" DESTINATION "${confdir}"
       FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
endif()
if(NOT EXISTS "$ENV{DESTDIR}${confdir}/sagas/order_fulfillment.cfg")
  file(INSTALL "${SAGA_PKG_SAGAS_DIR}/order_fulfillment.cfg" DESTINATION "${confdir}/sagas"
       FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
endif()
