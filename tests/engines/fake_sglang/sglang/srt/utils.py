def kill_process_tree(pid, include_parent=True):
    import psutil

    try:
        procs = psutil.Process(pid).children(recursive=True)
        if include_parent:
            procs.append(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
