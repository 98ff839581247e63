# Study-wide handlers: record the study's wall time next to its results.


onstart:
    shell(f"{LB} timing start {S.results}")


onsuccess:
    shell(f"{LB} timing finish {S.results}")
