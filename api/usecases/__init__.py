"""Use cases: what each request does, in the transaction its route hands over. Routes authorize,
call one use case and shape the response; use cases never see HTTP."""
