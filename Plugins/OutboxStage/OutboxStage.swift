import OCPP
