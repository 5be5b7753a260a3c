"""Wake-ups across replicas: one LISTEN connection per replica, fanned out in process."""
