"""mmaker's own tools around the processes: the supervisor that ``make run`` uses (:mod:`mmaker.supervise`)."""
