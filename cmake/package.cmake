# What `cmake --install` puts where, and the Debian package of it
# (`cpack -G DEB` in the build folder: msrs_<version>_<arch>.deb;
# deploy/package/check.sh builds, installs and runs it). The binaries, the
# schemas, the web app, the systemd units, a default /etc/msrs/msrs.conf,
# the credentials script its postinst runs, and the docs.
include(GNUInstallDirs)

install(TARGETS msrs msrs-agent msrs-supervisor msrs-syncd msrs-collectord msrs-archiver
                msrs-gateway msrs-capture msrs-replay msrs-tail msrs-devsim
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/schemas/ DESTINATION ${CMAKE_INSTALL_DATADIR}/msrs/schemas)
# the web app: its files and the two of uPlot's it serves (http.c), not
# the rest of node_modules
install(FILES ${PROJECT_SOURCE_DIR}/web/index.html ${PROJECT_SOURCE_DIR}/web/device.html
              ${PROJECT_SOURCE_DIR}/web/app.css
        DESTINATION ${CMAKE_INSTALL_DATADIR}/msrs/web)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/web/js/ DESTINATION ${CMAKE_INSTALL_DATADIR}/msrs/web/js
        FILES_MATCHING PATTERN "*.js")
install(FILES ${PROJECT_SOURCE_DIR}/web/node_modules/uplot/dist/uPlot.iife.min.js
              ${PROJECT_SOURCE_DIR}/web/node_modules/uplot/dist/uPlot.min.css
        DESTINATION ${CMAKE_INSTALL_DATADIR}/msrs/web/node_modules/uplot/dist)
install(FILES ${PROJECT_SOURCE_DIR}/deploy/prometheus/msrs-alerts.yml
        DESTINATION ${CMAKE_INSTALL_DATADIR}/msrs/prometheus)
install(PROGRAMS ${PROJECT_SOURCE_DIR}/deploy/local/make-credentials.sh
        DESTINATION ${CMAKE_INSTALL_DATADIR}/msrs)
install(FILES ${PROJECT_SOURCE_DIR}/deploy/package/msrs.conf DESTINATION /etc/msrs)
file(GLOB MSRS_UNITS ${PROJECT_SOURCE_DIR}/deploy/systemd/*.service
     ${PROJECT_SOURCE_DIR}/deploy/systemd/*.target)
install(FILES ${MSRS_UNITS} DESTINATION /lib/systemd/system)
file(GLOB MSRS_DOCS ${PROJECT_SOURCE_DIR}/docs/*.md)
install(FILES ${PROJECT_SOURCE_DIR}/README.md ${MSRS_DOCS} DESTINATION ${CMAKE_INSTALL_DOCDIR})
# the worked Kafka example (docs/operations.md) and the analysts' examples (docs/topics.md)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/deploy/kafka/ DESTINATION ${CMAKE_INSTALL_DOCDIR}/kafka)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/docs/examples/ DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME msrs)
set(CPACK_PACKAGE_VENDOR "msrs developers")
set(CPACK_PACKAGE_CONTACT "msrs developers <msrs@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "multi-sensor recording system: many devices on one clock")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION science)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# libwebsockets loads its libev support as a plugin (dlopen): not seen by shlibdeps
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser, openssl, libwebsockets-evlib-ev")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA ${PROJECT_SOURCE_DIR}/deploy/package/postinst
    ${PROJECT_SOURCE_DIR}/deploy/package/postrm ${PROJECT_SOURCE_DIR}/deploy/package/conffiles)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
