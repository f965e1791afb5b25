"""Each claim's science in one short module a reader can audit: the rule's text, the ``decide_*``
function that applies it, and the evidence it reads from the chapter's results. The chapter modules
(:mod:`uni_icl.experiments.learnability`, ...) run the experiments and build the verdicts from these;
the book quotes the ``decide_*`` functions next to the rules' English text."""
