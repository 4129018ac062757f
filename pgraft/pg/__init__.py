"""pgraft and PostgreSQL: the installer (:mod:`pgraft.pg.install`) and the SQL walkthrough
(:mod:`pgraft.pg.demo`)."""
