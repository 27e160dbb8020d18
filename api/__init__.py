from api.shared_metrics import share_between_processes

share_between_processes()
