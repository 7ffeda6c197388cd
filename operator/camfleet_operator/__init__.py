"""camfleet operator: kopf handlers over pure builders."""
