from services.sms import send_sms  # noqa: F401
