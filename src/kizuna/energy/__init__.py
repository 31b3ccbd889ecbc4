"""Local consumption of waste-to-energy power: 30-minute matching of a plant's send-out to
public facilities, supply schemes compared, report with charts. Other modules call
``kizuna.energy.service`` only."""
