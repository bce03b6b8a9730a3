// libmosquitto from Debian's libmosquitto-dev (the MQTT client of the health channel).
#include <mosquitto.h>
